// Package systemrange is the state machine of the system range
// (rangesm.StateMachine), range 1: member records (kept in step with the
// Raft configuration), alarms, the auth state and the revision oracle's
// ceiling (the highest revision the oracle may have handed out; see
// internal/oracle). Data ranges check their commands against a copy of the
// auth state and of the NOSPACE alarm that the system range hands them
// (raftcmd.KindSystemState). The range descriptors will live here too.
package systemrange
