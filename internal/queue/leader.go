package queue

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/queue/cron"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

const (
	// followerPoll is how often a node that does not lead looks whether it
	// does now.
	followerPoll = 100 * time.Millisecond
	// idlePoll bounds the leader's sleep when nothing is known due.
	idlePoll = time.Second
	// minTickGap spaces the leader's looks at the state when effects wake
	// it, so that a busy queue costs one look per gap, not per command.
	minTickGap = 5 * time.Millisecond
	// tickLimit bounds the expiries and sweeps of one tick.
	tickLimit = 1000
	// maxFirings bounds the firings of one schedule in one tick.
	maxFirings = 100
	// CatchUp is how far back a schedule's missed firings are still
	// fired, after the cluster had no leader (older ones are skipped).
	CatchUp = time.Hour
)

// leaderLoop does, on the range leader, the work that time drives:
// dispatching jobs that came due (or were released) to workers with room,
// failing attempts past their deadline, deleting finished jobs past their
// retention, and firing schedules. Each decision is a KindTick command
// fenced to the leader's term, stamped with the leader's clock.
func (s *Service) leaderLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	for {
		wait := followerPoll
		if term, ok := s.b.Leader(); ok {
			if d := time.Since(last); d < minTickGap {
				time.Sleep(minTickGap - d)
			}
			last = time.Now()
			next, err := s.tick(ctx, term)
			if err != nil && ctx.Err() == nil {
				s.logger.Debug("queue tick", "err", err)
				next = s.cfg.Now().Add(followerPoll)
			}
			wait = min(max(next.Sub(s.cfg.Now()), 0), idlePoll)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.wake:
		}
	}
}

// tick proposes the work due now, if any, and returns when to look next.
func (s *Service) tick(ctx context.Context, term uint64) (time.Time, error) {
	now := s.cfg.Now()
	nowMs := now.UnixMilli()
	d := s.m().Due(nowMs, tickLimit)
	next := time.UnixMilli(d.Next)
	if d.Next == machineNever {
		next = now.Add(idlePoll)
	}
	t := &queuewire.Tick{NowMs: nowMs, Dispatch: d.Dispatch, Expire: d.Expire, Sweep: d.Sweep}
	for _, si := range d.Schedules {
		times, at := s.firings(si.Schedule, now)
		if len(times) > 0 {
			t.Fire = append(t.Fire, &queuewire.Firing{Queue: si.Queue, Schedule: si.Schedule.Name, TimesMs: times})
		}
		if !at.IsZero() && at.Before(next) {
			next = at
		}
	}
	if len(t.Dispatch)+len(t.Expire)+len(t.Sweep)+len(t.Fire) == 0 {
		return next, nil
	}
	payload, err := proto.Marshal(t)
	if err != nil {
		return next, err
	}
	s.metrics.ticks.Inc()
	if _, err := s.b.ProposeFenced(ctx, machine.KindTick, payload, term); err != nil {
		return next, err
	}
	return now, nil // look again at once: there may be more
}

const machineNever = 1<<63 - 1

// scheduleView is a schedule as stored.
type scheduleView = queuepb.Schedule

// cronCache keeps parsed schedules by expression.
var cronCache sync.Map

func parseCron(expr string) (cron.Schedule, error) {
	if v, ok := cronCache.Load(expr); ok {
		return v.(cron.Schedule), nil
	}
	c, err := cron.Parse(expr)
	if err != nil {
		return nil, err
	}
	cronCache.Store(expr, c)
	return c, nil
}

// NextFiring returns the first firing of schedule s after its last one
// (zero if it never fires).
func NextFiring(s *scheduleView) time.Time {
	c, err := parseCron(s.Cron)
	if err != nil {
		return time.Time{}
	}
	return c.Next(time.UnixMilli(s.LastFiredMs).UTC(), time.UnixMilli(s.CreatedAtMs).UTC())
}

// firings returns the firings of s due at now (at most maxFirings, none
// older than CatchUp), and when the next one after them is.
func (s *Service) firings(sc *scheduleView, now time.Time) (times []int64, next time.Time) {
	if sc.Paused {
		return nil, time.Time{}
	}
	c, err := parseCron(sc.Cron)
	if err != nil {
		return nil, time.Time{}
	}
	anchor := time.UnixMilli(sc.CreatedAtMs).UTC()
	t := time.UnixMilli(sc.LastFiredMs).UTC()
	if floor := now.Add(-CatchUp); t.Before(floor) {
		t = floor
	}
	for len(times) < maxFirings {
		t = c.Next(t, anchor)
		if t.IsZero() {
			return times, time.Time{}
		}
		if t.After(now) {
			return times, t
		}
		times = append(times, t.UnixMilli())
	}
	return times, now
}
