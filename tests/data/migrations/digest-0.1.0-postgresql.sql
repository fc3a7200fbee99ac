CREATE TABLE paper (
	id SERIAL NOT NULL,
	key VARCHAR(300) NOT NULL,
	title_key VARCHAR(300) NOT NULL,
	title VARCHAR NOT NULL,
	abstract VARCHAR NOT NULL,
	authors JSON NOT NULL,
	url VARCHAR,
	pdf_url VARCHAR,
	code_url VARCHAR,
	sources JSON NOT NULL,
	published_at TIMESTAMP WITH TIME ZONE,
	first_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	upvotes INTEGER,
	comments INTEGER,
	PRIMARY KEY (id)
);

CREATE INDEX ix_paper_first_seen_at ON paper (first_seen_at);

CREATE UNIQUE INDEX ix_paper_key ON paper (key);

CREATE INDEX ix_paper_title_key ON paper (title_key);

CREATE TABLE source (
	id SERIAL NOT NULL,
	name VARCHAR(300) NOT NULL,
	location VARCHAR NOT NULL,
	kind VARCHAR,
	etag VARCHAR,
	last_modified VARCHAR,
	last_fetch_at TIMESTAMP WITH TIME ZONE,
	last_ok_at TIMESTAMP WITH TIME ZONE,
	last_count INTEGER NOT NULL,
	last_new INTEGER NOT NULL,
	last_error VARCHAR,
	PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_source_name ON source (name);

CREATE TABLE subscriber (
	id SERIAL NOT NULL,
	email VARCHAR(320) NOT NULL,
	status VARCHAR(20) NOT NULL,
	keywords JSON NOT NULL,
	exclude JSON NOT NULL,
	frequency VARCHAR(10) NOT NULL,
	weekday INTEGER NOT NULL,
	send_hour INTEGER NOT NULL,
	timezone VARCHAR NOT NULL,
	max_papers INTEGER NOT NULL,
	token_version INTEGER NOT NULL,
	bounce_count INTEGER NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	confirmed_at TIMESTAMP WITH TIME ZONE,
	unsubscribed_at TIMESTAMP WITH TIME ZONE,
	last_confirmation_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);

CREATE INDEX ix_subscriber_status ON subscriber (status);

CREATE UNIQUE INDEX ix_subscriber_email ON subscriber (email);

CREATE TABLE run (
	id SERIAL NOT NULL,
	kind VARCHAR(20) NOT NULL,
	started_at TIMESTAMP WITH TIME ZONE NOT NULL,
	finished_at TIMESTAMP WITH TIME ZONE,
	counts JSON NOT NULL,
	errors JSON NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_run_kind ON run (kind);

CREATE TABLE delivery (
	id SERIAL NOT NULL,
	subscriber_id INTEGER NOT NULL,
	edition VARCHAR(20) NOT NULL,
	status VARCHAR(20) NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at TIMESTAMP WITH TIME ZONE,
	lease_until TIMESTAMP WITH TIME ZONE,
	lease_owner VARCHAR,
	message_id VARCHAR,
	paper_keys JSON NOT NULL,
	last_error VARCHAR,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	sent_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_delivery_subscriber_edition UNIQUE (subscriber_id, edition),
	FOREIGN KEY(subscriber_id) REFERENCES subscriber (id)
);

CREATE INDEX ix_delivery_subscriber_id ON delivery (subscriber_id);

CREATE INDEX ix_delivery_edition ON delivery (edition);

CREATE INDEX ix_delivery_status_next ON delivery (status, next_attempt_at);

CREATE TABLE sentpaper (
	subscriber_id INTEGER NOT NULL,
	paper_id INTEGER NOT NULL,
	edition VARCHAR(20) NOT NULL,
	sent_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (subscriber_id, paper_id),
	FOREIGN KEY(subscriber_id) REFERENCES subscriber (id),
	FOREIGN KEY(paper_id) REFERENCES paper (id)
);

