//! Quoting round-trips through a real `sh -c`: any word stays one word, and nothing runs.

use std::process::Command;

use proptest::prelude::*;

fn echo_through_sh(words: &[String]) -> Vec<u8> {
    let line = pyscaler_ssh::command_line(
        "printf",
        std::iter::once("%s\\0").chain(words.iter().map(String::as_str)),
    )
    .expect("no NUL");
    Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .expect("run sh")
        .stdout
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_word_survives_sh_unchanged(words in prop::collection::vec("[^\u{0}]{0,24}", 1..4)) {
        let out = echo_through_sh(&words);
        let expected: Vec<u8> = words.iter().flat_map(|w| w.bytes().chain([0u8])).collect();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn shell_metacharacters_inject_nothing(
        parts in prop::collection::vec(prop::sample::select(vec![
            "'", "\"", "$", "`", ";", "&", "|", "\n", "\\", "$(", ")", "*", "~", "#", "{", "}",
            "<", ">", "!", " ", "\t", "exit 9", "id", "''",
        ]), 1..12)
    ) {
        let word: String = parts.concat();
        let out = echo_through_sh(std::slice::from_ref(&word));
        let mut expected = word.into_bytes();
        expected.push(0);
        prop_assert_eq!(out, expected);
    }
}
