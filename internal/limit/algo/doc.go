// Package algo holds the rate-limiting algorithms of Synod's limiters as
// pure functions of (parameters, state, time, request): GCRA (a token
// bucket of rate and burst), the sliding-window counter, and fixed and
// calendar windows. Nothing here reads a clock or keeps state between
// calls, so the same decisions can be made on any node from the same state
// and time, replayed in tests at simulated times, and checkpointed as a
// few integers (State).
//
// Times are Unix nanoseconds. Every duration a decision returns (how long
// to wait before retrying, until the state is full again, before a
// reservation may be used) is exact in nanoseconds, and never early: a
// caller that waits RetryAfter and retries with the same cost, with nothing
// else consumed meanwhile, is allowed. Callers that round to milliseconds
// must round up (CeilMillis).
//
// The concurrency limiter is not here: its permits are replicated keys on
// leases (package limitsm).
package algo
