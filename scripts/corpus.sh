#!/usr/bin/env bash
# Installs the English training corpus from Debian packages and extracts it into a folder of
# cleaned .txt documents, one document a file, for `dsa data build` (docs/data.md says what is in
# it, why, and under which licenses). Idempotent and non-interactive: packages already present are
# not fetched again, and the output folder is rewritten from scratch on every run.
#
#   scripts/corpus.sh                     the corpus in data/corpus
#   scripts/corpus.sh --out DIR           somewhere else
#   scripts/corpus.sh --no-python-docs    only the public-domain texts (KJV Bible, Jargon File)
#   scripts/corpus.sh --tokenizer         also train a tokenizer on the corpus with
#                                         `dsa tokenizer train` (build/release/dsa): data/tokenizer.json
#   scripts/corpus.sh --tokenizer --vocab-size N --tokenizer-out FILE
#
# Sources (Debian 12 packages):
#   bible-kjv-text + bible-kjv   King James Version (public domain), one document per chapter
#   jargon-text                  The Jargon File 4.4.7 (public domain), one document per chapter,
#                                appendix, and letter of the lexicon
#   python3.11-doc               The Python 3.11 documentation (PSF License 2.0), the reST sources
#                                of the tutorial, HOWTOs, FAQs, language and library references,
#                                one document per page
set -euo pipefail
cd "$(dirname "$0")/.."

out=data/corpus
python_docs=1
tokenizer=0
vocab_size=8192
tokenizer_out=data/tokenizer.json
while (($#)); do
  case "$1" in
    --out) out="$2"; shift ;;
    --no-python-docs) python_docs=0 ;;
    --tokenizer) tokenizer=1 ;;
    --vocab-size) vocab_size="$2"; shift ;;
    --tokenizer-out) tokenizer_out="$2"; shift ;;
    *)
      echo "corpus.sh: unknown option '$1' (known: --out DIR, --no-python-docs, --tokenizer," \
        "--vocab-size N, --tokenizer-out FILE)" >&2
      exit 2 ;;
  esac
  shift
done

packages=(bible-kjv bible-kjv-text jargon-text)
((python_docs)) && packages+=(python3.11-doc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "corpus: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The output folder is replaced whole: refuse one that holds anything but an earlier corpus.
if [ -z "$out" ] || [ "$(realpath -m "$out")" = / ]; then
  echo "corpus.sh: --out '$out' is not a usable folder" >&2
  exit 2
fi
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/SOURCES.md" ]; then
  echo "corpus.sh: $out exists and is not a corpus folder (no SOURCES.md): not replacing it" >&2
  exit 2
fi

# Build into a temporary folder and swap it in at the end, so an interrupted run leaves the old
# corpus whole.
staging="${out%/}.tmp.$$"
rm -rf "$staging"
mkdir -p "$staging/kjv" "$staging/jargon"
((python_docs)) && mkdir -p "$staging/python"
trap 'rm -rf "$staging"' EXIT

# --- King James Version: `bible` prints "Book N" headings and "  V text" verses. One document
# per chapter: its heading, a blank line, then the verses one a line, without their numbers.
kjv_program=$(cat <<'PERL'
my $dir = shift;
my ($book_no, $book, $fh) = (0, "");
while (my $line = <STDIN>) {
  chomp $line;
  if ($line =~ /^(\S.*) (\d+)$/) {
    my ($name, $chapter) = ($1, $2);
    if ($name ne $book) { $book = $name; $book_no++; }
    (my $slug = lc $name) =~ s/ /-/g;
    close $fh if $fh;
    my $path = sprintf("%s/%02d-%s-%03d.txt", $dir, $book_no, $slug, $chapter);
    open($fh, ">", $path) or die "cannot write $path: $!";
    print $fh "$name $chapter\n\n";
  } elsif ($line =~ /^\s+\d+ (.*\S)\s*$/) {
    die "verse before any chapter heading\n" unless $fh;
    print $fh "$1\n";
  } elsif ($line =~ /\S/) {
    die "unexpected line in the bible output: $line\n";
  }
}
close $fh if $fh;
die "expected 66 books, found $book_no\n" unless $book_no == 66;
PERL
)
bible -l0 "Genesis1:1-Revelation22:21" | perl -e "$kjv_program" "$staging/kjv"

# Shared by the next two: joins the lines of each prose paragraph into one line. A paragraph is
# split at blank lines; lines marked literal (code, tables, verse) are kept as they are, and a
# list item starts a new line.
reflow_sub=$(cat <<'PERL'
sub reflow {
  my ($lines, $literal) = @_;  # array refs: text lines, and whether each is literal
  my @out;
  my $prose = "";
  my $flush = sub { push @out, $prose if $prose ne ""; $prose = ""; };
  for my $i (0 .. $#$lines) {
    my $line = $lines->[$i];
    if ($line !~ /\S/) { $flush->(); push @out, "" if @out && $out[-1] ne ""; next; }
    if ($literal->[$i]) { $flush->(); push @out, $line; next; }
    (my $text = $line) =~ s/^\s+//;
    if ($text =~ /^([*+-]|#\.|\d+\.|\(\w\))\s/) { $flush->(); }
    $prose = $prose eq "" ? $text : "$prose $text";
  }
  $flush->();
  pop @out while @out && $out[-1] eq "";
  return join("\n", @out) . "\n";
}
PERL
)

# --- The Jargon File: chapters and appendices are documents; the lexicon's entries (":word:
# ...") are grouped by the first letter of their headword. The table of contents, the headword
# index and the bibliography are dropped. Lines indented deeper than the text (examples, verse)
# stay as they are; the rest is dedented and reflowed. No-break spaces become spaces.
jargon_program=$(cat <<'PERL'
my $dir = shift;
my (%docs, @order);
my ($doc, $in_glossary, $in_entries) = ("", 0, 0);
sub start { my $name = shift; push @order, $name unless exists $docs{$name}; $docs{$name} //= []; $doc = $name; }
while (my $line = <STDIN>) {
  chomp $line;
  $line =~ s/\xc2\xa0/ /g;
  if ($line =~ /^Chapter (\d+)\. /) { start(sprintf("chapter-%02d", $1)); $in_glossary = 0; }
  elsif ($line =~ /^Appendix ([A-Z])\. /) { start("appendix-" . lc $1); $in_glossary = 0; }
  elsif ($line =~ /^Glossary\s*$/) { $in_glossary = 1; $doc = ""; next; }
  elsif ($line =~ /^Bibliography\s*$/) { $in_glossary = 0; $doc = ""; next; }
  if ($in_glossary && $line =~ /^   :(.)/) {
    my $first = lc $1;
    $first = "0" unless $first =~ /[a-z]/;
    start("lexicon-$first");
    $in_entries = 1;
  }
  next if $in_glossary && !$in_entries;                  # the headword index
  next if $in_glossary && $line =~ /^\s+[A-Z0-9]\s*$/;  # letter headings of the lexicon
  next if $line =~ /^\s*(\xe2\x95\x90)+\s*$/;            # rules
  next if $doc eq "";
  push @{$docs{$doc}}, $line;
}
die "the Jargon File had no lexicon entries\n" unless grep { /^lexicon-/ } @order;
die "the Jargon File had no chapters\n" unless grep { /^chapter-/ } @order;
for my $name (@order) {
  my @lines = map { s/^ {1,3}//r } @{$docs{$name}};
  my @literal = map { /^\s/ ? 1 : 0 } @lines;
  my $path = "$dir/$name.txt";
  open(my $fh, ">", $path) or die "cannot write $path: $!";
  print $fh reflow(\@lines, \@literal);
  close $fh;
}
PERL
)
zcat /usr/share/doc/jargon-text/jargon.txt.gz | perl -e "$reflow_sub
$jargon_program" "$staging/jargon"

# --- Python documentation: the reST sources without the markup a reader of the rendered pages
# does not see: roles (:func:`x` -> x), links, directives without prose, labels, comments and
# section rules. Literal blocks (after "::", code-block and doctest bodies, >>> sessions, tables)
# are kept verbatim; prose paragraphs are dedented and reflowed. Pages under 200 bytes (stubs
# that only include other pages) are left out.
python_program=$(cat <<'PERL'
my ($src, $dir) = @ARGV[0, 1];
my %kept = map { $_ => 1 } qw(function method class data attribute exception decorator
  classmethod staticmethod decoratormethod cmdoption envvar opcode describe abstractmethod);
my %titled = (note => "Note:", warning => "Warning:", seealso => "See also:",
  important => "Important:", tip => "Tip:", caution => "Caution:", hint => "Hint:",
  impl_detail => "CPython implementation detail:");
my %versioned = (versionadded => "New in version", versionchanged => "Changed in version",
  deprecated => "Deprecated since version");
my %code = map { $_ => 1 } qw(code-block sourcecode doctest testcode testoutput code highlight);
my %dropped = map { $_ => 1 } qw(index toctree include literalinclude image figure raw only
  tabularcolumns productionlist csv-table list-table);
sub role {
  my ($name, $t) = @_;
  $t =~ s/\s*<[^>]*>$//;
  $t =~ s/^!//;
  $t =~ s/^~(?:.*\.)?//;
  return "RFC $t" if $name eq "rfc";
  return "PEP $t" if $name eq "pep";
  return $t;
}
sub indent_of { my $l = shift; $l =~ /^(\s*)/; return length $1; }
sub inline {
  my $t = shift;
  $t =~ s/:([\w:.+-]+):`([^`]*)`/role($1, $2)/ge;
  $t =~ s/`([^`<]*?)\s*<[^>]*>`__?/$1/g;
  $t =~ s/``([^`]+)``/$1/g;
  $t =~ s/`([^`]+)`__?/$1/g;
  $t =~ s/\*\*([^*]+)\*\*/$1/g;
  $t =~ s/\s*\[#[\w-]*\]_//g;
  $t =~ s/\|(version|release)\|/3.11/g;
  return $t;
}
while (my $file = <STDIN>) {
  chomp $file;
  (my $rel = substr($file, length($src) + 1)) =~ s/\.rst\.txt$//;
  (my $name = $rel) =~ s{/}{-}g;
  open(my $in, "<", $file) or die "cannot read $file: $!";
  my (@lines, @literal);
  my ($skip_block, $options) = (0, 0);
  my $literal_above = -1;  # indentation that a literal block must exceed, or -1
  my $pending_literal = -1;  # set by a line ending in "::" or a code directive
  while (my $line = <$in>) {
    chomp $line;
    $line =~ s/\s+$//;
    my $indent = indent_of($line);
    if ($line ne "" && $literal_above >= 0 && $indent <= $literal_above) { $literal_above = -1; }
    if ($line ne "" && $pending_literal >= 0) {
      if ($indent > $pending_literal) { $literal_above = $pending_literal; }
      $pending_literal = -1;
    }
    if ($literal_above >= 0) { push @lines, $line; push @literal, 1; next; }
    if ($skip_block) { next if $line eq "" || $indent > 0; $skip_block = 0; }
    if ($options) { next if $line =~ /^\s+:[\w-]+:/; $options = 0; }
    if ($line =~ /^(\s*)\.\. ([\w:-]+)::\s*(.*)$/) {
      my ($at, $directive, $arg) = (length $1, $2, $3);
      $directive =~ s/^(py|c|std)://;
      $options = 1;
      if ($kept{$directive}) { push @lines, $arg; push @literal, 0; push @lines, ""; push @literal, 0; }
      elsif ($titled{$directive}) { push @lines, $titled{$directive} . ($arg ne "" ? " $arg" : ""); push @literal, 0; }
      elsif ($versioned{$directive}) { push @lines, "$versioned{$directive} $arg."; push @literal, 0; }
      elsif ($directive eq "rubric") { push @lines, $arg; push @literal, 0; }
      elsif ($code{$directive}) { $pending_literal = $at; }
      elsif ($dropped{$directive}) { $skip_block = 1; }
      next;
    }
    next if $line =~ /^\s*\.\. _[^:]*:/;          # link targets
    next if $line =~ /^\s*\.\.( |$)/;              # comments and substitutions
    next if $line =~ /^([=\-~*^"#+`.])\1{2,}$/;   # section rules
    if ($line =~ /::$/) { $pending_literal = $indent; }
    next if $line =~ /^\s*::$/;
    $line =~ s/(\S)::$/$1:/;
    $line = inline($line);
    push @lines, $line;
    push @literal, ($line =~ /^\s*(>>>|\.\.\.|[+|])/ || $line =~ /^\s*=+( +=+)+$/) ? 1 : 0;
  }
  close $in;
  # Again on the reflowed text, for roles and links that a line break had split.
  my $text = inline(reflow(\@lines, \@literal));
  $text =~ s/^\s+//;
  next if length($text) < 200;
  my $path = "$dir/$name.txt";
  open(my $fh, ">", $path) or die "cannot write $path: $!";
  print $fh $text;
  close $fh;
}
PERL
)
if ((python_docs)); then
  src=/usr/share/doc/python3.11/html/_sources
  parts=(tutorial howto faq reference library using extending installing glossary.rst.txt)
  for part in "${parts[@]}"; do
    [ -e "$src/$part" ] || { echo "corpus: $src/$part is missing" >&2; exit 1; }
  done
  (cd "$src" && find "${parts[@]}" -name '*.rst.txt') | sort | sed "s|^|$src/|" |
    perl -e "$reflow_sub
$python_program" "$src" "$staging/python"
fi

{
  echo "Extracted by scripts/corpus.sh from Debian packages (see docs/data.md):"
  echo "- kjv/     bible-kjv-text: the King James Version, public domain."
  echo "- jargon/  jargon-text: The Jargon File 4.4.7, public domain (cite it as 'Jargon File 4.4.7')."
  if ((python_docs)); then
    echo "- python/  python3.11-doc: the Python 3.11 documentation, PSF License Version 2"
    echo "           (/usr/share/doc/python3.11-doc/copyright)."
  fi
} >"$staging/SOURCES.md"

rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$staging" "$out"
trap - EXIT
files=$(find "$out" -name '*.txt' | wc -l)
bytes=$(find "$out" -name '*.txt' -print0 | du -cb --files0-from=- | tail -1 | cut -f1)
echo "corpus: $files documents, $bytes bytes in $out"

if ((tokenizer)); then
  dsa=build/release/dsa
  [ -x "$dsa" ] || { echo "corpus: $dsa is missing: run scripts/setup.sh first" >&2; exit 1; }
  all="$(mktemp)"
  trap 'rm -f "$all"' EXIT
  find "$out" -name '*.txt' -print0 | sort -z | xargs -0 cat >"$all"
  mkdir -p "$(dirname "$tokenizer_out")"
  "$dsa" tokenizer train -f "$all" --vocab-size "$vocab_size" -o "$tokenizer_out"
fi
echo "next: build/release/dsa data build -i $out --tokenizer ${tokenizer_out} -o data/tokens"
