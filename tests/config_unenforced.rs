//! README.md's "Accepted with a warning" row and the code's table of accepted-but-not-enforced
//! fields (`skiff::config::unenforced::UNENFORCED`) say the same thing.

use skiff::config::unenforced::UNENFORCED;
use std::collections::BTreeSet;

#[test]
fn readme_lists_exactly_the_unenforced_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| **Accepted with a warning"))
        .expect("README has an \"Accepted with a warning\" row");
    let cell = row.split('|').nth(2).expect("the row's second cell");
    let listed: BTreeSet<&str> = cell.split('`').skip(1).step_by(2).collect();
    let table: BTreeSet<&str> = UNENFORCED.iter().map(|u| u.field).collect();
    let missing: Vec<_> = table.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README lacks {missing:?}; README has {extra:?} not in UNENFORCED"
    );
}
