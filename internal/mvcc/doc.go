// Package mvcc stores every version of every user key in Pebble and answers
// reads "as of" a revision.
//
// # Keys
//
// The Pebble key of a version is keys.MVCCKey(userKey, revision): the escaped
// user key followed by the inverted revision. All versions of one user key
// are therefore contiguous and sorted newest first, and user keys keep their
// byte order. The version of a key visible at revision R is found with one
// SeekGE to keys.MVCCKey(key, R): the first entry at or after it, if it still
// belongs to the key, is the newest version with revision <= R. A scan skips
// the remaining (older) versions of a key with one SeekGE to
// keys.MVCCKeyUpperBound(key).
//
// # Values
//
// The Pebble value of a version is
//
//	flags     1 byte   bit 0: tombstone; the other bits must be zero
//	sub       uvarint  index of the write within its revision (fits an int32)
//	create    uvarint  create_revision (0 for a tombstone, >= 1 otherwise)
//	version   uvarint  version (0 for a tombstone, >= 1 otherwise)
//	lease     varint   lease ID (zig-zag; 0 for a tombstone or no lease)
//	value     rest     the user value (empty for a tombstone)
//
// mod_revision is not stored in the value: it is the revision in the key.
// Decoding validates all of this and returns an error wrapping ErrCorrupt
// instead of panicking on malformed input.
//
// # Semantics
//
// A tombstone records a deletion: a key is live at revision R when its newest
// version with revision <= R exists and is not a tombstone. Put continues the
// history of a live key (version+1, same create_revision) and starts a new one
// (version 1, create_revision = the write's revision) otherwise. Delete writes
// a tombstone only over a live key.
//
// Writes of one revision may touch the same user key more than once (a put
// followed by a delete in one txn): the later write replaces the earlier one,
// since both have the same Pebble key. Revisions must be written in
// increasing order per key; Put and Delete return an error when asked to write
// below the newest version of a key.
//
// Reads take one Pebble iterator per call, so all results of a call (its
// key-values and its count) come from one consistent view.
//
// # Compaction
//
// Compact(rev) deletes, for each user key, every version older than the newest
// version with revision <= rev, and that version too when it is a tombstone.
// No read at a revision >= rev can see any of them, so compaction runs
// concurrently with such reads and with new writes (which have revisions >
// rev). Older versions of a key are always deleted before (or in the same
// batch as) the tombstone that hides them, so a crash or a concurrent reader
// never observes a resurrected version.
package mvcc
