//! The user directory: people by display name, login or e-mail, typed with prefixes, typos,
//! in the other alphabet (`ivanov` finds `Иванов`) or on the other keyboard layout.
//!
//! Everything is compared in one form: lower case, `ё` as `е`, Cyrillic transliterated to
//! Latin. A company's directory is thousands of people, so it is ranked in memory per query.

use veche_store::UserRow;

fn translit(c: char) -> &'static str {
    match c {
        'а' => "a",
        'б' => "b",
        'в' => "v",
        'г' => "g",
        'д' => "d",
        'е' | 'ё' | 'э' => "e",
        'ж' => "zh",
        'з' => "z",
        'и' => "i",
        'й' | 'ы' => "y",
        'к' => "k",
        'л' => "l",
        'м' => "m",
        'н' => "n",
        'о' => "o",
        'п' => "p",
        'р' => "r",
        'с' => "s",
        'т' => "t",
        'у' => "u",
        'ф' => "f",
        'х' => "kh",
        'ц' => "ts",
        'ч' => "ch",
        'ш' => "sh",
        'щ' => "shch",
        'ъ' | 'ь' => "",
        'ю' => "yu",
        'я' => "ya",
        _ => "",
    }
}

/// The words of `text` in the common form.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut out = String::new();
            for c in w.chars().flat_map(char::to_lowercase) {
                let t = translit(c);
                if t.is_empty() && !('\u{0400}'..='\u{04FF}').contains(&c) {
                    out.push(c);
                } else {
                    out.push_str(t);
                }
            }
            out
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// How well one query word matches one word of a user's: 0 for not at all.
fn word_score(query: &str, word: &str) -> u32 {
    if word == query {
        return 100;
    }
    if word.starts_with(query) {
        return 80;
    }
    let n = query.chars().count();
    let distance = strsim::damerau_levenshtein(query, word);
    let prefix: String = word.chars().take(n).collect();
    let prefix_distance = strsim::damerau_levenshtein(query, &prefix);
    match (n, distance.min(prefix_distance)) {
        (4.., 1) => 60,
        (7.., 2) => 40,
        _ if n >= 3 && word.contains(query) => 20,
        _ => 0,
    }
}

fn score(query: &[String], fields: &[String]) -> u32 {
    let mut total = 0;
    for q in query {
        let best = fields.iter().map(|w| word_score(q, w)).max().unwrap_or(0);
        if best == 0 {
            return 0;
        }
        total += best;
    }
    total
}

/// The best `limit` matches of `query` among `users`, best first.
pub fn rank(users: Vec<UserRow>, query: &str, limit: usize) -> Vec<UserRow> {
    let typed = words(query);
    let switched = switch_layout(query).map(|s| words(&s)).unwrap_or_default();
    if typed.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(u32, UserRow)> = users
        .into_iter()
        .filter_map(|u| {
            let mut fields = words(&u.display_name);
            fields.extend(words(&u.login));
            fields.extend(words(&u.email));
            fields.extend(words(&u.department));
            let s = score(&typed, &fields).max(if switched.is_empty() {
                0
            } else {
                score(&switched, &fields) / 2
            });
            (s > 0).then_some((s, u))
        })
        .collect();
    scored.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.display_name.cmp(&b.1.display_name))
    });
    scored.into_iter().take(limit).map(|(_, u)| u).collect()
}

/// Whether `c` is a Cyrillic letter.
pub fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{0400}'..='\u{04FF}')
}

/// The same keys on the other keyboard layout: `ghbdtn` ↔ `привет`. `None` if `text` has
/// letters of both layouts or none.
pub fn switch_layout(text: &str) -> Option<String> {
    const LATIN: &str = "qwertyuiop[]asdfghjkl;'zxcvbnm,.`";
    const CYRILLIC: &str = "йцукенгшщзхъфывапролджэячсмитьбюё";
    let latin: Vec<char> = LATIN.chars().collect();
    let cyrillic: Vec<char> = CYRILLIC.chars().collect();
    let has_latin = text.chars().any(|c| c.is_ascii_alphabetic());
    let has_cyrillic = text.chars().any(is_cyrillic);
    if has_latin == has_cyrillic {
        return None;
    }
    let (from, to) = if has_latin {
        (&latin, &cyrillic)
    } else {
        (&cyrillic, &latin)
    };
    Some(
        text.chars()
            .map(|c| {
                let lower = c.to_lowercase().next().unwrap_or(c);
                from.iter().position(|f| *f == lower).map_or(c, |i| to[i])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(login: &str, name: &str, email: &str, department: &str) -> UserRow {
        UserRow {
            id: format!("{login}@hq"),
            login: login.into(),
            display_name: name.into(),
            email: email.into(),
            password_hash: String::new(),
            is_admin: false,
            locked: false,
            created_at: 0,
            department: department.into(),
        }
    }

    fn people() -> Vec<UserRow> {
        vec![
            user("ivanov", "Иванов Пётр", "p.ivanov@corp.ru", "Бухгалтерия"),
            user("petrova", "Петрова Анна", "anna@corp.ru", "Склад"),
            user("smith", "John Smith", "john.smith@corp.com", "Sales"),
            user("semenov", "Семёнов Олег", "oleg@corp.ru", "Логистика"),
        ]
    }

    fn logins(query: &str) -> Vec<String> {
        rank(people(), query, 10)
            .into_iter()
            .map(|u| u.login)
            .collect()
    }

    #[test]
    fn finds_by_name_prefix_login_and_email() {
        assert_eq!(logins("Иван")[0], "ivanov");
        assert_eq!(logins("petr")[0], "ivanov", "Пётр, exactly");
        assert_eq!(logins("petrov")[0], "petrova");
        assert_eq!(logins("john.smith")[0], "smith");
        assert_eq!(logins("анна")[0], "petrova");
        assert_eq!(logins("бухгалтер")[0], "ivanov", "by department");
        assert_eq!(
            logins("logist")[0],
            "semenov",
            "a department, transliterated"
        );
    }

    #[test]
    fn latin_finds_cyrillic_and_back() {
        assert_eq!(logins("ivanov")[0], "ivanov");
        assert_eq!(logins("Ivanov Petr")[0], "ivanov");
        assert_eq!(logins("смит")[0], "smith");
        assert_eq!(logins("Семенов")[0], "semenov", "ё and е");
    }

    #[test]
    fn forgives_a_typo_and_the_wrong_layout() {
        assert_eq!(logins("Ивонов")[0], "ivanov");
        assert_eq!(
            logins("bdfyjd")[0],
            "ivanov",
            "иванов typed on the Latin layout"
        );
    }

    #[test]
    fn finds_nobody_for_nonsense() {
        assert!(logins("zzzzqx").is_empty());
    }
}
