//! The data pages a client asks for (`NxPage`: `qPages`, `qInitialDataFetch`), clipped to
//! what an object has.

use serde_json::Value;

/// A requested data page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Area {
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

impl Area {
    /// Parses `{"qLeft","qTop","qWidth","qHeight"}` (missing numbers are 0).
    pub(crate) fn from_json(v: &Value) -> Area {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        Area {
            left: n("qLeft"),
            top: n("qTop"),
            width: n("qWidth"),
            height: n("qHeight"),
        }
    }

    /// This area clipped to a `width` × `height` matrix: `(left, top, width, height)`.
    pub(crate) fn clamp(&self, width: usize, height: usize) -> (usize, usize, usize, usize) {
        let top = self.top.min(height);
        let left = self.left.min(width);
        (
            left,
            top,
            self.width.min(width - left),
            self.height.min(height - top),
        )
    }

    /// Parses a list of areas.
    pub(crate) fn list(v: Option<&Value>) -> Vec<Area> {
        v.and_then(Value::as_array)
            .map(|l| l.iter().map(Area::from_json).collect())
            .unwrap_or_default()
    }
}
