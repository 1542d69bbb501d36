package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/metrics"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/store"
)

// newMetrics builds the node's metrics over its published state.
func (s *Server) newMetrics() *metrics.Metrics {
	m := metrics.New(metrics.Source{
		Term:           func() uint64 { return s.Published().Term },
		IsLeader:       s.isLeader,
		HasLeader:      s.HasLeader,
		CommittedIndex: func() uint64 { return s.Published().Commit },
		AppliedIndex:   func() uint64 { return s.Published().Applied },
		LogEntries: func() uint64 {
			pub := s.Published()
			return pub.Applied + 1 - min(pub.LogFirst, pub.Applied+1)
		},
		LeaderChanges: func() uint64 { return s.Published().LeaderChanges },
		Revision:      func() int64 { return s.Published().KV.Revision },
		Watchers: func() (int, int) {
			st := s.hub.Stats()
			return st.Watchers, st.Unsynced
		},
		WatchersLeftBehind: func() int64 { return s.hub.Stats().LeftBehind },
		WatchersOverBudget: func() int64 { return s.hub.Stats().OverBudget },
		WatchQueuedBytes:   func() int { return s.hub.Stats().QueuedBytes },
		Leases:             s.lessor.Len,
		QuotaUsed:          s.dbSize,
		DB:                 s.db,
	})
	// Counts over the ranges rather than a series per range: the number of
	// ranges will grow to thousands per node.
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "synod", Name: "ranges", Help: "Ranges this node has a replica of (the system range and the data ranges)."},
			func() float64 { return float64(len(s.allRanges())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "synod", Name: "ranges_led", Help: "Ranges whose replica on this node is their leader."},
			func() float64 {
				n := 0
				for _, id := range s.allRanges() {
					if pub := s.rangePublished(id); pub != nil && pub.Lead == s.id.MemberID {
						n++
					}
				}
				return float64(n)
			}),
	)
	return m
}

// Ready reports whether the node should receive traffic: it has not failed
// (Fatal), knows a leader, has its data, and has applied everything it knows
// committed.
func (s *Server) Ready() (bool, string) {
	if err := s.failed.Load(); err != nil {
		return false, (*err).Error()
	}
	pub := s.Published()
	switch {
	case pub.Lead == 0:
		return false, "no leader"
	case !pub.Initialized:
		return false, "joining: no data yet"
	case pub.Applied < pub.Commit:
		return false, fmt.Sprintf("applied %d of %d committed entries", pub.Applied, pub.Commit)
	}
	return true, "ok"
}

// serveHTTP serves /metrics, /healthz and /readyz at addr, and
// /debug/pprof if enabled.
func (s *Server) serveHTTP(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics: %w", err)
	}
	s.httpLis = l
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.failed.Load(); err != nil {
			// The node stopped serving (Fatal); its process should exit.
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, *err)
			return
		}
		fmt.Fprintln(w, "ok") // the process serves
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := s.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	if s.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.goBackground(func(context.Context) {
		if err := s.httpSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("metrics server stopped", "err", err)
		}
	})
	return nil
}

// HTTPAddr is the address of the metrics and health server, if any.
func (s *Server) HTTPAddr() string {
	if s.httpLis == nil {
		return ""
	}
	return s.httpLis.Addr().String()
}

// countingTransport counts snapshot sends for the metrics.
type countingTransport struct {
	store.Transport
	m *metrics.Metrics
}

func (t countingTransport) SendSnapshot(id keys.RangeID, m *pb.Message, snap *replica.OutgoingSnapshot, done func(ok bool)) {
	t.Transport.SendSnapshot(id, m, snap, func(ok bool) {
		result := "ok"
		if !ok {
			result = "failed"
		}
		t.m.SnapshotsSent.WithLabelValues(result).Inc()
		done(ok)
	})
}
