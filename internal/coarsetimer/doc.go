// Package coarsetimer hands out timeout channels shared by every caller whose
// deadline falls in the same slot of a coarse clock.
//
// A server bounds each request's wait for Raft with a timeout of several
// seconds that almost never fires. context.WithTimeout per request starts a
// runtime timer and registers a child on the request's context, then stops
// and unregisters both: 3% of a member's CPU with a thousand clients writing.
// A Timer costs a map lookup under a mutex per request, and one ticker.
package coarsetimer
