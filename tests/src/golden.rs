//! Golden files: compared, or written when `STRADDLE_BLESS` is set.

use std::path::Path;

pub fn bless() -> bool {
    std::env::var_os("STRADDLE_BLESS").is_some()
}

/// Compares `actual` with the golden file at `path` (or writes it when blessing).
pub fn check(path: &Path, actual: &str) {
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with STRADDLE_BLESS=1",
            path.display()
        )
    });
    if expected != actual {
        let diff = differing_lines(&expected, actual);
        panic!("{} differs from the golden file:\n{diff}", path.display());
    }
}

fn differing_lines(a: &str, b: &str) -> String {
    let mut out: String = a
        .lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(10)
        .map(|(i, (x, y))| format!("line {}:\n- {x}\n+ {y}\n", i + 1))
        .collect();
    let (na, nb) = (a.lines().count(), b.lines().count());
    if na != nb {
        out.push_str(&format!("{na} lines expected, {nb} written\n"));
    }
    out
}
