//! A live-state snapshot read from a file (`plan --live FILE`, `drift --live FILE`): its
//! size bounded before it is read, then parsed and checked by [`LiveState::parse`].

use std::path::Path;

use crate::pure::live::{LiveError, LiveState, MAX_SNAPSHOT_BYTES};

/// Read and check a snapshot file.
pub fn read(path: &Path) -> Result<LiveState, LiveError> {
    let shown = path.display().to_string();
    let unreadable = |source| LiveError::Unreadable {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.len() > MAX_SNAPSHOT_BYTES {
        return Err(LiveError::TooLarge {
            path: shown,
            size: meta.len(),
        });
    }
    let text = std::fs::read(path).map_err(unreadable)?;
    LiveState::parse(&shown, &text)
}
