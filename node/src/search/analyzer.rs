//! The text analyzer for Russian and English mixed with codes and document numbers.
//!
//! One tokenizer does the whole chain, because its steps depend on each other:
//! - text is split on white space; each chunk loses the punctuation around it;
//! - a chunk that holds digits and inner separators (`ПТУ-000123`, `INV-2026/15`) is a code:
//!   it is kept whole, as runs of its parts (`ПТУ-000123/7` gives `пту-000123` and
//!   `000123/7`) and as single parts, so it is found whole, by a leading or trailing run, or
//!   by any part;
//! - everything else is split into words of letters and digits (emoji and symbols go);
//! - words are lower-cased and `ё` is folded to `е`;
//! - words of Cyrillic letters get the Russian Snowball stemmer, words of Latin letters the
//!   English one; codes and numbers are not stemmed.

use rust_stemmers::{Algorithm, Stemmer};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use veche_core::directory::is_cyrillic;
pub(crate) use veche_core::directory::switch_layout;

/// The name the analyzer is registered under in the index.
pub(crate) const NAME: &str = "veche";

/// The analyzer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Analyzer {
    russian: std::sync::Arc<Stemmer>,
    english: std::sync::Arc<Stemmer>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analyzer")
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Self {
            russian: std::sync::Arc::new(Stemmer::create(Algorithm::Russian)),
            english: std::sync::Arc::new(Stemmer::create(Algorithm::English)),
        }
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '-' | '/' | '.' | '_' | '\\' | '№' | '#')
}

fn fold(word: &str) -> String {
    word.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ё' { 'е' } else { c })
        .collect()
}

impl Analyzer {
    fn stem(&self, word: String) -> String {
        if word.chars().all(is_cyrillic) {
            self.russian.stem(&word).into_owned()
        } else if word.chars().all(|c| c.is_ascii_alphabetic()) {
            self.english.stem(&word).into_owned()
        } else {
            word
        }
    }

    /// The terms of `text`, in order, with their byte offsets.
    pub(crate) fn tokens(&self, text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        let push = |out: &mut Vec<Token>, from: usize, to: usize, text: String| {
            let position = out.len();
            out.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text,
                position_length: 1,
            });
        };
        for (start, chunk) in chunks(text) {
            let trimmed_start = chunk.len()
                - chunk
                    .trim_start_matches(|c: char| !c.is_alphanumeric())
                    .len();
            let core = chunk
                .trim_start_matches(|c: char| !c.is_alphanumeric())
                .trim_end_matches(|c: char| !c.is_alphanumeric());
            if core.is_empty() {
                continue;
            }
            let core_start = start + trimmed_start;
            let is_code = core.chars().any(|c| c.is_ascii_digit())
                && core.chars().any(is_separator)
                && core.chars().all(|c| c.is_alphanumeric() || is_separator(c));
            if is_code {
                push(&mut out, core_start, core_start + core.len(), fold(core));
                // Runs of its parts are codes too, so that `РН-4567` and `4567/2024` find
                // `РН-4567/2024`.
                let parts = parts_of(core);
                if parts.len() <= MAX_CODE_PARTS {
                    for first in 0..parts.len() {
                        for last in first + 1..parts.len() {
                            if first == 0 && last == parts.len() - 1 {
                                continue;
                            }
                            let (from, to) = (parts[first].0, parts[last].1);
                            if core[from..to].chars().any(|c| c.is_ascii_digit()) {
                                push(
                                    &mut out,
                                    core_start + from,
                                    core_start + to,
                                    fold(&core[from..to]),
                                );
                            }
                        }
                    }
                }
            }
            let mut word_start = None;
            for (i, c) in core
                .char_indices()
                .chain(std::iter::once((core.len(), ' ')))
            {
                if c.is_alphanumeric() {
                    word_start.get_or_insert(i);
                } else if let Some(ws) = word_start.take() {
                    let word = fold(&core[ws..i]);
                    // The parts of a code are words too (`Накладная-15` is found by
                    // `накладные`); only the whole code stays as written.
                    let term = self.stem(word);
                    push(&mut out, core_start + ws, core_start + i, term);
                }
            }
        }
        out
    }
}

/// A code of more parts than this is indexed whole and by single parts only: runs of parts
/// grow with the square of their number.
const MAX_CODE_PARTS: usize = 6;

/// The byte spans of the runs of letters and digits in `code`.
fn parts_of(code: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code
        .char_indices()
        .chain(std::iter::once((code.len(), ' ')))
    {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            out.push((s, i));
        }
    }
    out
}

/// The white-space separated chunks of `text`, with their byte offsets.
fn chunks(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push((s, &text[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// The tokens of one text, handed to tantivy.
#[derive(Debug)]
pub(crate) struct Tokens {
    tokens: Vec<Token>,
    index: usize,
    empty: Token,
}

impl TokenStream for Tokens {
    fn advance(&mut self) -> bool {
        if self.index < self.tokens.len() {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        // tantivy asks only after `advance` returned true; an empty stream still answers.
        match self.index.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(t) => t,
            None => &self.empty,
        }
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.index.checked_sub(1) {
            Some(i) if i < self.tokens.len() => &mut self.tokens[i],
            _ => &mut self.empty,
        }
    }
}

impl Tokenizer for Analyzer {
    type TokenStream<'a> = Tokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Tokens {
        Tokens {
            tokens: self.tokens(text),
            index: 0,
            empty: Token::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<String> {
        Analyzer::default()
            .tokens(text)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn russian_forms_and_yo_meet() {
        let a = terms("счёт");
        assert_eq!(a, terms("счета"));
        assert_eq!(a, terms("счетов"));
        assert_eq!(a, terms("СЧЁТ"));
        assert_eq!(terms("ёлка"), terms("елка"));
    }

    #[test]
    fn english_is_stemmed_too() {
        assert_eq!(terms("invoices"), terms("invoice"));
        assert_eq!(terms("shipped"), terms("shipping"));
    }

    #[test]
    fn codes_are_found_whole_and_by_parts() {
        let t = terms("Оплата по ПТУ-000123, срочно!");
        assert!(t.contains(&"пту-000123".to_owned()), "{t:?}");
        assert!(t.contains(&"пту".to_owned()));
        assert!(t.contains(&"000123".to_owned()));
        let t = terms("see INV-2026/15.");
        assert!(t.contains(&"inv-2026/15".to_owned()), "{t:?}");
        assert!(t.contains(&"inv-2026".to_owned()), "{t:?}");
        assert!(t.contains(&"2026/15".to_owned()), "{t:?}");
        assert!(t.contains(&"2026".to_owned()));
        assert!(t.contains(&"15".to_owned()));
    }

    #[test]
    fn emoji_and_symbols_are_ignored() {
        assert_eq!(terms("привет 👍 🎉 !!!"), terms("привет"));
    }

    #[test]
    fn offsets_point_into_the_text() {
        let text = "Счёт  № 42\u{00a0}оплачен";
        for t in Analyzer::default().tokens(text) {
            assert!(text.get(t.offset_from..t.offset_to).is_some(), "{t:?}");
        }
    }

    #[test]
    fn layouts_switch_both_ways() {
        assert_eq!(switch_layout("ghbdtn").as_deref(), Some("привет"));
        assert_eq!(switch_layout("руддщ").as_deref(), Some("hello"));
        assert_eq!(switch_layout("mixed смесь"), None);
        assert_eq!(switch_layout("12345"), None);
    }
}
