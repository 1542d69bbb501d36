// Package backup defines Synod's backup format: a consistent point-in-time
// copy of a range's replicated state, as streamed by Maintenance.Snapshot and
// written by `synod snapshot save` (or `etcdctl snapshot save`).
//
// Layout:
//
//	"SYNODBAK" version:uvarint
//	header-length:uvarint header (protobuf wire: cluster, member, revision,
//	    compaction revision, applied index, creation time)
//	repeated: key-length:uvarint key value-length:uvarint value
//	0 (a zero key length ends the pairs)
//	sha256 of everything before it (32 bytes)
//
// Keys are Pebble keys of the range's replicated spans (package keys), in
// order. Restoring verifies the checksum before writing anything.
package backup
