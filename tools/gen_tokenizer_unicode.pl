#!/usr/bin/perl
# Writes src/text/tokenizer_unicode.c: the Unicode classes that added-token matching needs
# (Rust regex \w and \s, as Hugging Face tokenizers uses them for single_word, lstrip, rstrip),
# as sorted code point ranges taken from Perl's Unicode tables, whose \w and \s have the same
# definition (Alphabetic + Mark + Decimal_Number + Connector_Punctuation + Join_Control; and
# White_Space). Usage: perl tools/gen_tokenizer_unicode.pl > src/text/tokenizer_unicode.c
use strict;
use warnings;
use Unicode::UCD;

sub ranges {
    my ($re) = @_;
    my @r;
    my $start = -1;
    for my $cp (0 .. 0x10FFFF) {
        next if $cp >= 0xD800 && $cp <= 0xDFFF && $start < 0;
        my $in = ($cp < 0xD800 || $cp > 0xDFFF) && chr($cp) =~ $re;
        if ($in && $start < 0) { $start = $cp; }
        if (!$in && $start >= 0) { push @r, [$start, $cp - 1]; $start = -1; }
    }
    push @r, [$start, 0x10FFFF] if $start >= 0;
    return @r;
}

sub table {
    my ($name, @r) = @_;
    my $out = "static const uint32_t ${name}[][2] = {\n";
    my $line = "   ";
    for my $x (@r) {
        my $item = sprintf(" {0x%X, 0x%X},", $x->[0], $x->[1]);
        if (length($line) + length($item) > 99) { $out .= "$line\n"; $line = "   "; }
        $line .= $item;
    }
    $out .= "$line\n};\n";
    return $out;
}

my $version = Unicode::UCD::UnicodeVersion();
print "/* Unicode classes for added-token matching: Rust regex \\w (word characters) and \\s\n";
print " * (White_Space), as code point ranges. Generated from Unicode $version by\n";
print " * tools/gen_tokenizer_unicode.pl; do not edit by hand. */\n";
print "#include \"text/tokenizer_internal.h\"\n\n";
print table("word_ranges", ranges(qr/^\w$/u)), "\n";
print table("space_ranges", ranges(qr/^\s$/u)), "\n";
print <<'C';
static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r[mid][1] < cp) lo = mid + 1;
        else if (r[mid][0] > cp) hi = mid;
        else return true;
    }
    return false;
}

bool tok_is_word_char(uint32_t cp) {
    return in_ranges(word_ranges, sizeof word_ranges / sizeof word_ranges[0], cp);
}

bool tok_is_space(uint32_t cp) {
    return in_ranges(space_ranges, sizeof space_ranges / sizeof space_ranges[0], cp);
}
C
