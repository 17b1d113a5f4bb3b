//! [`ObjectText`]: the object under review, read whole or in place.

use std::cell::Cell;

use crate::json::{self, Reader};

/// The object under review: its whole text (`req.object`), or the start of
/// it inside an AdmissionReview body, where the body goes on after it
/// ([`crate::admission`]). Each review reads it at most once.
pub(crate) struct ObjectText<'a> {
    text: &'a str,
    /// `Some(levels)`: read in place, nesting at most `levels` deep.
    in_place: Option<u32>,
    /// In place: where the object ended, once it was read.
    end: Cell<Option<usize>>,
}

impl<'a> ObjectText<'a> {
    pub(crate) fn whole(text: &'a str) -> Self {
        ObjectText {
            text,
            in_place: None,
            end: Cell::new(None),
        }
    }

    pub(crate) fn in_place(text: &'a str, levels: u32) -> Self {
        ObjectText {
            text,
            in_place: Some(levels),
            end: Cell::new(None),
        }
    }

    /// In place: the object's length, if the review read all of it.
    pub(crate) fn end(&self) -> Option<usize> {
        self.end.get()
    }

    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&mut Reader<'a>) -> json::Result<T>,
    ) -> json::Result<T> {
        let Some(levels) = self.in_place else {
            return Reader::document(self.text, read);
        };
        let mut r = Reader::nested(self.text, levels);
        let value = read(&mut r)?;
        self.end.set(Some(r.position()));
        Ok(value)
    }
}
