//! What a user typed into the search box, as the index will be asked: words (each matched
//! with a tolerance for typos that grows with its length, the last one also as a prefix)
//! and quoted phrases (matched exactly, in order). Pure: no index here, so the rules are
//! tested on their own and one parser serves the API and the CLI.

/// The longest query accepted, in characters.
pub const MAX_CHARS: usize = 500;
/// The most words and phrase words together (each word expands to many terms).
pub const MAX_WORDS: usize = 32;

/// One word to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Lower-cased, as the index stores words.
    pub text: String,
    /// Edits (Levenshtein, a transposition counting one) it may be away from a match.
    pub typos: u8,
    /// Also matches words it begins (the last word of the query, still being typed).
    pub prefix: bool,
}

/// Words this long or longer are compared for highlighting by their first characters only.
const MATCH_CHARS: usize = 64;

impl Word {
    /// Whether `token` (a word of the text, as the index spells it) is one this word
    /// matches: within its typos, or, for a prefix, beginning with something within them.
    /// The rule the index applies, repeated here to highlight what matched.
    pub fn matches(&self, token: &str) -> bool {
        let word: Vec<char> = self.text.chars().take(MATCH_CHARS).collect();
        let token: Vec<char> = token.chars().take(MATCH_CHARS).collect();
        let prefix = self.as_prefix();
        if !prefix && word.len().abs_diff(token.len()) > self.typos as usize {
            return false;
        }
        distance(&word, &token, prefix) <= self.typos as usize
    }

    /// Whether the index matches it as a prefix too (a single character would match too
    /// much to mean anything).
    pub fn as_prefix(&self) -> bool {
        self.prefix && self.text.chars().count() >= 2
    }
}

/// Edits (insert, delete, substitute, or swap two neighbours) from `word` to `token`, or
/// with `prefix` to the closest beginning of `token`.
fn distance(word: &[char], token: &[char], prefix: bool) -> usize {
    let (n, m) = (word.len(), token.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(word[i - 1] != token[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && word[i - 1] == token[j - 2] && word[i - 2] == token[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    if prefix { d[n].iter().copied().min().unwrap_or(n) } else { d[n][m] }
}

/// A parsed query: every word and every phrase must match (AND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub words: Vec<Word>,
    /// Each phrase's words, lower-cased, in order.
    pub phrases: Vec<Vec<String>>,
}

/// Why a query cannot be run, in words (the 422's detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query is empty: give at least one word")]
    Empty,
    #[error("the query is longer than {MAX_CHARS} characters")]
    TooLong,
    #[error("the query has more than {MAX_WORDS} words")]
    TooManyWords,
    #[error("a quote opened at character {0} is never closed")]
    UnclosedQuote(usize),
}

/// How many typos a word of `chars` characters may have: none below 4, one from 4, two from
/// 8 (shorter words have too many neighbours for a typo to mean anything).
pub fn typos_for(chars: usize) -> u8 {
    match chars {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// The words of `text` as the index tokenizes them: runs of letters and digits, lower-cased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// Parses `input`. The last bare word is a prefix too, unless the query ends in a space or a
/// closing quote (the user finished it).
pub fn parse(input: &str) -> Result<Parsed, QueryError> {
    if input.chars().count() > MAX_CHARS {
        return Err(QueryError::TooLong);
    }
    let mut parsed = Parsed::default();
    let mut rest = input;
    let mut offset = 0;
    while let Some(open) = rest.find('"') {
        parsed.words.extend(words(&rest[..open]).map(|text| Word { typos: typos_for(text.chars().count()), text, prefix: false }));
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else {
            return Err(QueryError::UnclosedQuote(input[..offset + open].chars().count() + 1));
        };
        let phrase: Vec<String> = words(&after[..close]).collect();
        match phrase.len() {
            0 => {}
            // A quoted single word is that word, exactly.
            1 => parsed.words.extend(phrase.into_iter().map(|text| Word { text, typos: 0, prefix: false })),
            _ => parsed.phrases.push(phrase),
        }
        offset += open + 1 + close + 1;
        rest = &after[close + 1..];
    }
    let tail: Vec<String> = words(rest).collect();
    let finished = rest.ends_with(|c: char| !c.is_alphanumeric()) || rest.is_empty();
    let last = tail.len().checked_sub(1);
    for (i, text) in tail.into_iter().enumerate() {
        let prefix = Some(i) == last && !finished;
        parsed.words.push(Word { typos: typos_for(text.chars().count()), text, prefix });
    }
    let count = parsed.words.len() + parsed.phrases.iter().map(Vec::len).sum::<usize>();
    if count == 0 {
        return Err(QueryError::Empty);
    }
    if count > MAX_WORDS {
        return Err(QueryError::TooManyWords);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, typos: u8, prefix: bool) -> Word {
        Word { text: text.into(), typos, prefix }
    }

    #[test]
    fn typos_grow_with_the_word_and_the_last_word_is_a_prefix() {
        let parsed = parse("Printr on fire").unwrap();
        assert_eq!(parsed.words, vec![word("printr", 1, false), word("on", 0, false), word("fire", 1, true)]);
        assert_eq!(parse("extraordinary ").unwrap().words, vec![word("extraordinary", 2, false)], "finished: no prefix");
        assert_eq!(typos_for(3), 0);
        assert_eq!(typos_for(4), 1);
        assert_eq!(typos_for(7), 1);
        assert_eq!(typos_for(8), 2);
    }

    #[test]
    fn quotes_make_phrases_and_a_quoted_word_is_exact() {
        let parsed = parse(r#"toner "paper jam" "Tray" feed"#).unwrap();
        assert_eq!(parsed.phrases, vec![vec!["paper".to_string(), "jam".to_string()]]);
        assert_eq!(parsed.words, vec![word("toner", 1, false), word("tray", 0, false), word("feed", 1, true)]);
        assert_eq!(parse(r#""paper jam""#).unwrap().words, Vec::<Word>::new());
    }

    #[test]
    fn malformed_queries_say_what_is_wrong() {
        assert_eq!(parse(""), Err(QueryError::Empty));
        assert_eq!(parse(" !? \"\" "), Err(QueryError::Empty));
        assert_eq!(parse(r#"printer "on fire"#), Err(QueryError::UnclosedQuote(9)));
        assert_eq!(parse(&"a ".repeat(33)), Err(QueryError::TooManyWords));
        assert_eq!(parse(&"x".repeat(501)), Err(QueryError::TooLong));
        assert!(QueryError::UnclosedQuote(9).to_string().contains("character 9"));
    }

    #[test]
    fn a_word_matches_within_its_typos_and_a_prefix_its_beginnings() {
        let printr = word("printr", 1, false);
        assert!(printr.matches("printer"));
        assert!(printr.matches("printr"));
        assert!(!printr.matches("printers"), "two edits away");
        assert!(word("fier", 1, false).matches("fire"), "a swap is one edit");
        let fi = word("fi", 0, true);
        assert!(fi.matches("fire") && fi.matches("fi") && !fi.matches("af"));
        let prnt = word("prnt", 1, true);
        assert!(prnt.matches("printer"), "prnt is one edit from the beginning print");
        assert!(!word("on", 0, false).matches("one"));
        assert!(!word("x", 0, true).matches("xylophone") && word("x", 0, true).matches("x"), "one character is no prefix");
    }

    #[test]
    fn words_are_split_as_the_index_splits_them() {
        let parsed = parse("Größe: café-bar 42").unwrap();
        let texts: Vec<&str> = parsed.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["größe", "café", "bar", "42"]);
    }
}
