// Package txnlock holds what a transaction over several data ranges leaves
// in each range while it runs (issue 15, step 3): its locks (the key spans it
// reads or writes, and the writes it will make), and, in the range of its
// primary key, its record (pending, committed at a revision, or aborted).
//
// The protocol is Percolator's: the coordinator reads at a revision R from
// the oracle, prewrites (locks) every range the transaction names, the
// primary's first, takes the commit revision C from the oracle, commits the
// record (the commit point), then resolves the other ranges' locks at C.
// Whoever meets a lock asks the record: committed locks are resolved at
// their revision, aborted or expired ones are removed. The package has the
// types, their encoding and the in-memory table a range keeps; the data
// range's state machine applies the commands and the server coordinates.
package txnlock
