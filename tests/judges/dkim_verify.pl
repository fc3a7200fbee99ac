#!/usr/bin/perl
# Verifies the DKIM signature of the message on standard input with Mail::DKIM (an
# implementation nobody here wrote). The public key comes from $DKIM_RECORD, the TXT record a
# receiver would find in DNS. Prints the result ("pass", "fail", ...) and its detail.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::PublicKey;

{
    no warnings 'redefine';
    # The receiver's DNS lookup, answered from the test's key.
    *Mail::DKIM::PublicKey::fetch_async = sub {
        my ( $class, %prms ) = @_;
        my $key = Mail::DKIM::PublicKey->parse( $ENV{DKIM_RECORD} );
        my $on_success = ( $prms{Callbacks} || {} )->{Success} || sub { $_[0] };
        my $result = $on_success->($key);
        return sub { $result };
    };
}

binmode STDIN;
my $dkim = Mail::DKIM::Verifier->new();
while ( my $line = <STDIN> ) {
    $line =~ s/\015?\012$/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
print $dkim->result, "\n", ( $dkim->result_detail // "" ), "\n";
