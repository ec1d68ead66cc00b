//! Power cuts (unsynced bytes dropped), I/O errors and a full disk, through the real binaries.
