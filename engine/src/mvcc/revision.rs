//! A point in the store's history.

/// `main` is the store revision a write created; `sub` orders the changes
/// made inside that one write. Ordered by `main`, then `sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub(crate) fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_order_by_main_then_sub() {
        let mut revs = vec![
            Revision::new(3, 0),
            Revision::new(2, 5),
            Revision::new(2, 1),
            Revision::new(1, 9),
        ];
        revs.sort();
        assert_eq!(
            revs,
            vec![
                Revision::new(1, 9),
                Revision::new(2, 1),
                Revision::new(2, 5),
                Revision::new(3, 0)
            ]
        );
    }
}
