package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	raftpb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/coarsetimer"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/etcdapi"
	"github.com/synod-io/synod/internal/gateway"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/limit"
	"github.com/synod-io/synod/internal/metrics"
	"github.com/synod-io/synod/internal/portmux"
	"github.com/synod-io/synod/internal/queue"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/rangesm"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/storage"
	"github.com/synod-io/synod/internal/store"
	"github.com/synod-io/synod/internal/systemrange"
	"github.com/synod-io/synod/internal/tlsconfig"
	"github.com/synod-io/synod/internal/transport"
	"github.com/synod-io/synod/internal/watch"
)

// Server is a running Synod node.
type Server struct {
	cfg    Config
	logger *slog.Logger
	// descs are the data ranges' descriptors (router.go).
	descs     atomic.Pointer[rangedesc.Set]
	fs        vfs.FS
	db        *pebble.DB
	id        ident
	clientURL string
	// memberFileID is the data dir's member file as it was at start
	// (watchDataDir).
	memberFileID fileID
	// usage estimates what the storage quota counts; quotaRefused is set
	// when a write was refused for the quota, until the NOSPACE alarm is
	// raised.
	usage        *storageUsage
	quotaRefused atomic.Bool

	store     *store.Store
	transport *transport.Transport
	compactor *compactor
	hub       *watch.Hub
	// merger hands the hub the events of several data ranges in revision
	// order (nil with one data range, until the first split; watchmerge.go).
	merger atomic.Pointer[watchMerger]
	// descMu serializes changes of descs (splits applied by several
	// ranges' goroutines, refreshDescriptors); descsWake asks rangesLoop
	// to refresh them now (a snapshot changed a range's span).
	descMu    sync.Mutex
	descsWake chan struct{}
	// adding, while set, holds the descriptors a change of descs is about
	// to store, for the replicas it starts first (newStateMachine).
	adding atomic.Pointer[rangedesc.Set]
	// telling is set while a goroutine tells the services of leases
	// revoked across ranges (tellRevokedLeases).
	telling   atomic.Bool
	lessor    *lease.Lessor
	promoteMu sync.Mutex             // serializes lessor promotions
	revokeQ   chan expiry            // expired leases waiting for a revoke worker
	oracleQ   chan *revisionsRequest // requests for revisions waiting for the oracle (oracle.go)
	stampWake chan struct{}          // signals stampLoop of a new entry in stampMu.wants

	readRevisions *batcher[uint64] // the oracle's revisions for reads, shared (readbatch.go)
	fences        fenceCache       // read fences learned and being asked for (readbatch.go)

	// stampMu guards the ranges' latest requests for revisions to stamp
	// their commands with (oracle.go).
	stampMu struct {
		sync.Mutex
		wants map[keys.RangeID]replica.RevisionsWanted
	}
	authz  *auth.Authorizer
	limits *limit.Service

	peerLis   net.Listener
	clientLis net.Listener
	clientTLS *tlsconfig.Source // nil: the client API is plaintext
	peerTLS   *tlsconfig.Source // nil: peer traffic is plaintext, authenticated by peerSecret
	httpLis   net.Listener
	httpSrv   *http.Server
	metrics   *metrics.Metrics
	// history samples the KV traffic for the web console's charts.
	history   *metrics.History
	peerSrv   *grpc.Server
	clientSrv *grpc.Server
	// peerSecret is the cluster's peer secret (nil: none, with peerTLS).
	peerSecret []byte
	// clientMux shares the client port between clientSrv and the JSON
	// gateway's HTTP server; both pass their calls through the
	// interceptors clientUnary and clientStream.
	clientMux    *portmux.Mux
	gateway      *gateway.Gateway
	clientUnary  []grpc.UnaryServerInterceptor
	clientStream []grpc.StreamServerInterceptor

	// services are Synod's services whose data live in data ranges: each
	// extends a data range's state machine and acts on its applied effects.
	services []rangeService
	queues   *queue.Service

	reqIDs atomic.Uint64
	// timeouts bounds requests' waits for Raft (RequestTimeout).
	timeouts *coarsetimer.Timer
	// installMu keeps physical compaction and snapshot installs apart.
	installMu sync.RWMutex
	// confMu serializes the membership changes this node makes as leader.
	confMu sync.Mutex
	// handingOver is when (UnixNano) a leadership transfer this node asked
	// for (transferLeadership) gives up: until then rangesLoop does not pull
	// the data ranges' leadership back to it.
	handingOver atomic.Int64
	removedOnce sync.Once
	removed     atomic.Pointer[map[uint64]bool] // members removed from the cluster

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	fatal     chan error
	failed    atomic.Pointer[error] // the first error reported on fatal
	fatalMu   sync.Mutex            // serializes onFatal
	closeOnce sync.Once
	closeErr  error
}

// Open starts a node: it bootstraps the data dir on first start, or loads it.
func Open(cfg Config) (_ *Server, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, fs: fsOrDefault(cfg.FS), usage: newStorageUsage(), fatal: make(chan error, 1), timeouts: coarsetimer.New(timeoutResolution)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.goBackground(s.timeouts.Run)

	if s.peerLis, err = listen(cfg.PeerListener, cfg.PeerAddr); err != nil {
		return nil, fmt.Errorf("listen for peers: %w", err)
	}
	if s.clientLis, err = listen(cfg.ClientListener, cfg.ClientAddr); err != nil {
		return nil, fmt.Errorf("listen for clients: %w", err)
	}
	if err := s.loadTLS(); err != nil {
		return nil, err
	}
	warnPlaintext(cfg.Logger, "client", s.clientLis.Addr(), s.clientTLS, "--cert-file and --key-file")
	warnPlaintext(cfg.Logger, "peer", s.peerLis.Addr(), s.peerTLS, "--peer-cert-file, --peer-key-file and --peer-trusted-ca-file")
	s.clientURL = cfg.AdvertiseClientURL
	if s.clientURL == "" {
		s.clientURL = urlScheme(s.clientTLS) + s.clientLis.Addr().String()
	}
	peerURL := urlScheme(s.peerTLS) + s.peerLis.Addr().String()
	if cfg.AdvertisePeerURL != "" {
		peerURL = cfg.AdvertisePeerURL
	}

	existed, err := inspectDataDir(s.fs, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	before, err := listIfExists(s.fs, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s.db, err = storage.Open(storage.Options{Dir: cfg.DataDir, FS: cfg.FS, Logger: cfg.Logger, EventListener: s.usage.listener()})
	if err != nil {
		return nil, err
	}
	if err := s.checkDataDir(existed); err != nil {
		return nil, err
	}
	id, secret, err := s.establishIdentity(s.ctx, peerURL)
	if err != nil {
		if !existed {
			// Nothing was committed: leave the data dir as it was, so
			// that a corrected start is a first start again rather than
			// one checkDataDir refuses.
			s.discardNewStorage(before)
		}
		return nil, err
	}
	s.id, s.peerSecret = id, secret
	s.logger = cfg.Logger.With("member", fmt.Sprintf("%x", id.MemberID), "name", id.Name)
	if err := s.checkNotRemoved(); err != nil {
		return nil, err
	}
	if err := s.checkDataNotLost(); err != nil {
		return nil, err
	}
	if s.memberFileID, err = writeMemberFile(s.fs, cfg.DataDir, id); err != nil {
		return nil, err
	}
	if !existed {
		// What the new member wrote is in a memtable: flush it, so that the
		// quota's estimate starts exact (Pebble flushes what it recovers
		// when it opens an existing instance).
		if err := s.db.Flush(); err != nil {
			return nil, fmt.Errorf("flush new data dir: %w", err)
		}
	}
	s.usage.open(s.db)
	if err := s.checkPeerAddress(peerURL); err != nil {
		return nil, err
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("seed request ids: %w", err)
	}
	// Request IDs start at a random point so that entries proposed by an
	// earlier incarnation of this node never match a new request.
	s.reqIDs.Store(binary.BigEndian.Uint64(seed[:]) >> 1)

	peerCreds, err := s.peerCreds(id.ClusterID, secret)
	if err != nil {
		return nil, err
	}
	s.transport = transport.New(transport.Config{
		ClusterID:   id.ClusterID,
		NodeID:      id.MemberID,
		Handler:     handlerRef{s},
		DialOptions: peerDialOptions(cfg, peerCreds),
		Interceptor: cfg.PeerInterceptor,
		IsRemoved:   s.isRemoved,
		OnRemoved:   s.memberRemoved,
		Logger:      s.logger,
	})
	if err := s.refreshPeers(); err != nil {
		return nil, err
	}
	if err := s.loadRemoved(); err != nil {
		return nil, err
	}
	s.descsWake = make(chan struct{}, 1)
	if err := s.loadDescriptors(); err != nil {
		return nil, err
	}
	s.compactor = newCompactor(s.db, &s.installMu, s.logger)
	s.lessor = lease.NewLessor(lease.Config{CheckpointInterval: cfg.LeaseCheckpointInterval})
	s.revokeQ = make(chan expiry, 1024)
	s.oracleQ = make(chan *revisionsRequest, 1024)
	s.readRevisions = newBatcher[uint64](roundsInFlight)
	s.stampWake = make(chan struct{}, 1)
	s.stampMu.wants = make(map[keys.RangeID]replica.RevisionsWanted)
	// A node that joined has no applied state until its first snapshot.
	applied, err := replica.LoadAppliedState(s.db, keys.FirstDataRangeID)
	if err != nil {
		if ok, berr := rangesm.IsBootstrapped(s.db, keys.FirstDataRangeID); berr != nil || ok {
			return nil, err
		}
		applied = replica.AppliedState{}
	}
	hubMeta := applied.KV
	if s.multiRange() {
		metas := map[keys.RangeID]kv.Meta{}
		txns := map[keys.RangeID]*rangeTxns{}
		for _, id := range s.dataRanges() {
			st, err := replica.LoadAppliedState(s.db, id)
			if err != nil {
				if ok, berr := rangesm.IsBootstrapped(s.db, id); berr != nil || ok {
					return nil, fmt.Errorf("load the applied state of range %d: %w", id, err)
				}
				st = replica.AppliedState{} // joined: its first snapshot brings it
			}
			metas[id] = st.KV
			txns[id] = &rangeTxns{}
			if txns[id].floor, txns[id].maxCommit, err = datarange.LoadTxnState(s.db, id); err != nil {
				return nil, err
			}
		}
		var m *watchMerger
		m, hubMeta = newWatchMerger(metas, txns)
		s.merger.Store(m)
	}
	s.hub = watch.NewHub(watch.Config{
		View:             s.hubView,
		ProgressInterval: cfg.WatchProgressNotifyInterval,
		MaxStreamBytes:   cfg.WatchMaxStreamBytes,
		MaxQueuedBytes:   cfg.WatchMaxQueuedBytes,
		Logger:           s.logger,
	}, hubMeta)
	s.metrics = s.newMetrics()
	s.history = metrics.NewHistory(s.metrics, historyInterval, historySamples)
	s.goBackground(s.history.Run)
	// Before the replica starts: replaying committed entries at start may
	// apply auth commands, whose effects onApply hands the authorizer.
	if s.authz, err = s.newAuthorizer(); err != nil {
		return nil, err
	}
	s.queues = s.newQueues()
	s.store = store.Open(store.Config{
		NodeID:       id.MemberID,
		DB:           s.db,
		Transport:    countingTransport{s.transport, s.metrics},
		TickInterval: cfg.TickInterval,
		Replica: replica.Config{
			ElectionTicks:        cfg.ElectionTicks,
			HeartbeatTicks:       cfg.HeartbeatTicks,
			ProposalTicks:        int(cfg.RequestTimeout/cfg.TickInterval) + cfg.ElectionTicks,
			LogTruncateThreshold: cfg.LogTruncateThreshold,
			LogKeepEntries:       cfg.LogKeepEntries,
			LogTruncateStep:      cfg.LogTruncateStep,
			InstallMu:            &s.installMu,
			// Only a node that joined lacks state; a bootstrapped one wrote
			// it atomically with its identity.
			Uninitialized: true,
		},
		NewStateMachine:   s.newStateMachine,
		SpansOf:           s.spansOf,
		FreshRevisions:    s.multiRange(),
		OnApply:           s.onApply,
		OnRevisionsWanted: s.onRevisionsWanted,
		OnFatal:           s.onFatal,
		Logger:            s.logger,
	})
	for _, r := range s.allRanges() {
		if err := s.store.AddReplica(r); err != nil {
			return nil, err
		}
	}
	if rev := s.compactedEverywhere(); rev > 0 {
		// A compaction may have been cut short by a crash: finish it, as
		// far as every data range compacted.
		s.compactor.schedule(rev)
	}
	s.goBackground(s.compactor.run)
	s.goBackground(s.hub.Run)
	// Both do nothing while there is one data range.
	s.goBackground(s.closeLoop)
	s.goBackground(s.expiredLocksLoop)
	s.goBackground(s.leaseLoop)
	s.goBackground(s.oracleLoop)
	s.goBackground(s.stampLoop)
	for i := 0; i < leaseRevokeWorkers; i++ {
		s.goBackground(s.revokeWorker)
	}

	peerOpts, err := s.peerServerOptions()
	if err != nil {
		return nil, err
	}
	s.peerSrv = grpc.NewServer(peerOpts...)
	s.transport.Register(s.peerSrv)
	s.registerLeaseForwarding(s.peerSrv)
	s.registerClusterForwarding(s.peerSrv)
	s.registerOracleService(s.peerSrv)
	s.limits = s.newLimits()
	s.limits.RegisterPeer(s.peerSrv)
	s.goBackground(func(context.Context) { _ = s.peerSrv.Serve(s.peerLis) })

	s.goBackground(s.authz.Tokens().Run)
	s.clientUnary = []grpc.UnaryServerInterceptor{s.metrics.UnaryInterceptor(), s.authz.Unary()}
	s.clientStream = []grpc.StreamServerInterceptor{s.metrics.StreamInterceptor(), s.authz.Stream()}
	s.openClientPort()
	s.clientSrv = grpc.NewServer(
		s.clientCredsOption(),
		grpc.MaxRecvMsgSize(cfg.maxRecvMsgSize()),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		// Requests run on long-lived workers whose stacks stay grown: with a
		// new goroutine per request, growing its stack for Pebble's iterator
		// construction took 15% of a member's CPU serving gets. Streams that
		// find every worker busy get their own goroutine as before.
		grpc.NumStreamWorkers(clientStreamWorkers),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.clientUnary...),
		grpc.ChainStreamInterceptor(s.clientStream...),
	)
	// Every service is served over gRPC and by the JSON gateway.
	reg := gateway.Tee(s.clientSrv, s.gateway)
	limits := etcdapi.Limits{MaxRequestBytes: cfg.MaxRequestBytes, MaxTxnOps: cfg.MaxTxnOps}
	pb.RegisterKVServer(reg, etcdapi.NewKV(s, limits))
	pb.RegisterMaintenanceServer(reg, etcdapi.NewMaintenance(s))
	pb.RegisterClusterServer(reg, etcdapi.NewCluster(s))
	pb.RegisterWatchServer(reg, etcdapi.NewWatch(s, limits))
	pb.RegisterLeaseServer(reg, etcdapi.NewLease(s))
	pb.RegisterAuthServer(reg, auth.NewService(authBackend{s}, s.authz))
	s.registerPeerSecretService(s.clientSrv)
	s.registerCoordination(reg)
	synodpb.RegisterRangesServer(reg, rangesServer{s: s})
	s.limits.Register(reg)
	s.goBackground(s.limits.Run)
	s.queues.Register(reg)
	s.metrics.Registry.MustRegister(s.queues.Collectors()...)
	s.goBackground(s.queues.Run)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s.clientSrv, hs)
	s.serveClientPort()
	s.goBackground(s.publishLoop)
	s.goBackground(s.rangesLoop)
	s.goBackground(s.quotaLoop)
	s.goBackground(s.watchDataDir)
	if len(cfg.Join) > 0 {
		s.goBackground(s.promoteLoop)
	}
	if cfg.MetricsAddr != "" {
		if err := s.serveHTTP(cfg.MetricsAddr); err != nil {
			return nil, err
		}
	}

	s.logger.Info("synod member started",
		"cluster", fmt.Sprintf("%x", id.ClusterID),
		"client-url", s.clientURL, "peer-url", peerURL, "data-dir", cfg.DataDir)
	return s, nil
}

func listen(l net.Listener, addr string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	return net.Listen("tcp", addr)
}

// peerDialOptions returns the options of connections to peers: the peer
// TLS credentials if any (they replace the transport's plaintext default),
// the configured options, and a dialer bound to PeerSourceIP if set.
func peerDialOptions(cfg Config, creds credentials.TransportCredentials) []grpc.DialOption {
	var opts []grpc.DialOption
	if creds != nil {
		opts = append(opts, grpc.WithTransportCredentials(creds))
	}
	if cfg.PeerSourceIP != "" {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(cfg.PeerSourceIP)}}
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	return append(opts, cfg.PeerDialOptions...)
}

// checkPeerAddress refuses to start when the stored peer URL of this member
// does not match the address it listens on (or, when one is configured, the
// URL it advertises): peers would never reach it.
func (s *Server) checkPeerAddress(peerURL string) error {
	m, ok, err := cluster.GetMember(s.db, s.id.MemberID)
	if err != nil || !ok {
		return err
	}
	if s.cfg.AdvertisePeerURL != "" {
		if slices.Contains(m.PeerURLs, peerURL) {
			return nil
		}
		return fmt.Errorf("member %s has peer URLs %v but advertises %s", m.Name, m.PeerURLs, peerURL)
	}
	listenHost, listenPort, _ := net.SplitHostPort(s.peerLis.Addr().String())
	for _, u := range m.PeerURLs {
		host, port, err := net.SplitHostPort(cluster.HostPort(u))
		if err != nil {
			continue
		}
		ip := net.ParseIP(listenHost)
		if port == listenPort && (host == listenHost || (ip != nil && ip.IsUnspecified()) || hostResolvesTo(host, listenHost)) {
			return nil
		}
	}
	return fmt.Errorf("member %s has peer URLs %v but listens on %s", m.Name, m.PeerURLs, s.peerLis.Addr())
}

func hostResolvesTo(host, ip string) bool {
	addrs, err := net.LookupHost(host)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a == ip {
			return true
		}
	}
	return false
}

// refreshPeers points the transport at the peer URLs of the current
// members, and forgets former members.
func (s *Server) refreshPeers() error {
	members, err := cluster.ListMembers(s.db)
	if err != nil {
		return err
	}
	current := map[uint64]bool{}
	for _, m := range members {
		if m.ID == s.id.MemberID || len(m.PeerURLs) == 0 {
			continue
		}
		current[m.ID] = true
		s.transport.SetPeer(m.ID, cluster.HostPort(m.PeerURLs[0]))
	}
	s.transport.RetainPeers(current)
	return nil
}

func (s *Server) goBackground(fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(s.ctx)
	}()
}

func (s *Server) onApply(id keys.RangeID, out replica.ApplyOutput) {
	if s.cfg.TestingBeforeApply != nil {
		s.cfg.TestingBeforeApply(id, out)
	}
	if out.SnapshotInstalled {
		s.metrics.SnapshotsInstalled.Inc()
	}
	if id == keys.SystemRangeID {
		s.onSystemApply(out)
		return
	}
	if s.usage.applied(out.Events) > 0 && s.cfg.QuotaBackendBytes > 0 && s.dbSize() > s.cfg.QuotaBackendBytes {
		s.usage.notify() // the quota loop raises the alarm
	}
	if out.SnapshotInstalled {
		// The installed state is in memtables, which the quota's estimate
		// does not see: flush them.
		if _, err := s.db.AsyncFlush(); err != nil {
			s.logger.Warn("flush after snapshot install", "err", err)
		}
	}
	if len(out.Splits) > 0 {
		s.splitsApplied(id, &out)
	}
	if out.SnapshotInstalled && id != keys.SystemRangeID && datarange.SpanChangedByInstall(s.rangePublished(id).Derived) {
		// The range split (or more) since this replica last applied its
		// log: learn the ranges made, and hold the watchers until they are
		// here.
		s.holdForLearnedRanges(id)
		select {
		case s.descsWake <- struct{}{}:
		default:
		}
	}
	if m := s.merger.Load(); m != nil {
		if out.SnapshotInstalled {
			// The installed state's locks and commits (published with it).
			out.TxnLockFloor, out.TxnMaxCommit = 0, 0
			if pub := s.rangePublished(id); pub != nil {
				out.TxnLockFloor = datarange.Locks(pub.Derived).Floor()
				out.TxnMaxCommit = datarange.MaxCommit(pub.Derived)
			}
		}
		m.applied(s.hub, id, &out)
	}
	if id == keys.FirstDataRangeID {
		if s.merger.Load() == nil {
			if out.SnapshotInstalled {
				s.hub.Reset(out.KV)
			}
			s.hub.Publish(out.Events, out.KV)
		}
		// The leases and the services are the first range's.
		s.onLeaseChanges(out.Leases)
		for _, svc := range s.services {
			svc.OnApply(out.Extensions, out.SnapshotInstalled)
		}
	}
	if len(out.Compactions) > 0 || out.SnapshotInstalled {
		// Versions go once every data range compacted them away (each
		// answers reads below its own compaction revision as compacted).
		if rev := s.compactedEverywhere(); rev > 0 {
			s.compactor.schedule(rev)
		}
	}
}

// compactedEverywhere returns the lowest compaction revision of the data
// ranges as this node applied them.
func (s *Server) compactedEverywhere() int64 {
	var rev int64 = -1
	for _, id := range s.dataRanges() {
		pub := s.rangePublished(id)
		if pub == nil {
			return 0
		}
		if rev < 0 || pub.KV.CompactRevision < rev {
			rev = pub.KV.CompactRevision
		}
	}
	return max(rev, 0)
}

// onSystemApply acts on what a batch of the system range applied: member
// and auth changes.
func (s *Server) onSystemApply(out replica.ApplyOutput) {
	if out.AuthChanged || out.SnapshotInstalled {
		s.authz.Invalidate()
	}
	s.registerAuthTokens(out.AuthTokens)
	if out.SnapshotInstalled || out.ConfChanged {
		s.onConfChange()
	}
}

// rangeService is a service whose data live in data ranges (the job
// queues): it extends each data range's state machine, and acts on what
// the applied batches ask of it.
type rangeService interface {
	NewExtension() datarange.Extension
	OnApply(effects []any, snapshotInstalled bool)
}

// onFatal reports the first unrecoverable error (of any range) on Fatal;
// later ones (the other ranges' replicas often fail the same way at once)
// only log.
func (s *Server) onFatal(err error) {
	s.fatalMu.Lock()
	defer s.fatalMu.Unlock()
	if s.failed.Load() != nil {
		return
	}
	if errors.Is(err, replica.ErrLogLost) {
		err = fmt.Errorf("%v: %w", err, ErrDataLost)
		s.recordDataLost(err)
	}
	s.failed.Store(&err)
	select {
	case s.fatal <- err:
	default:
	}
}

// Hub implements etcdapi.Backend.
func (s *Server) Hub() *watch.Hub { return s.hub }

// watchView gives the watch hub a consistent view for history reads.
func (s *Server) watchView() (pebble.Reader, kv.Meta, func(), error) {
	snap, m, err := s.view()
	if err != nil {
		return nil, kv.Meta{}, nil, err
	}
	return snap, m, func() { snap.Close() }, nil
}

// Fatal yields an error if the node hit a failure it cannot recover from
// (its storage failed); the process should exit.
func (s *Server) Fatal() <-chan error { return s.fatal }

// ClientAddr is the address the client API listens on.
func (s *Server) ClientAddr() string { return s.clientLis.Addr().String() }

// PeerAddr is the address the peer service listens on.
func (s *Server) PeerAddr() string { return s.peerLis.Addr().String() }

// MemberID is this node's member ID.
func (s *Server) MemberID() uint64 { return s.id.MemberID }

// ClusterID is the ID of the cluster this node belongs to.
func (s *Server) ClusterID() uint64 { return s.id.ClusterID }

// clientStreamWorkers is the number of goroutines that serve client
// requests (see grpc.NumStreamWorkers): enough for the requests a member has
// in flight under heavy load, which mostly wait for Raft.
const clientStreamWorkers = 256

// timeoutResolution is how late past RequestTimeout a request's wait for Raft
// may end.
const timeoutResolution = 100 * time.Millisecond

// Published returns the published state of the data range's replica:
// where the KV state, its revision and the writes' leader are.
func (s *Server) Published() *replica.Published {
	pub, err := s.store.Published(keys.FirstDataRangeID)
	if err != nil {
		return &replica.Published{}
	}
	return pub
}

// Campaign makes this node start an election for every range (tests use
// it).
func (s *Server) Campaign(ctx context.Context) error {
	for _, id := range s.allRanges() {
		var err error
		if doErr := s.store.Do(ctx, id, func(r *replica.Replica) { err = r.Campaign() }); doErr != nil {
			return doErr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// newStateMachine returns the state machine of this node's replica of
// range id.
func (s *Server) newStateMachine(id keys.RangeID) (rangesm.StateMachine, error) {
	if id == keys.SystemRangeID {
		return systemrange.New(systemrange.Config{Logger: s.logger}), nil
	}
	d, ok := s.descriptor(id)
	if !ok {
		return nil, fmt.Errorf("no descriptor of data range %d", id)
	}
	var exts []datarange.Extension
	if id == keys.FirstDataRangeID {
		// The services' keys are reserved keys, which sort below every
		// split: the first data range holds them all.
		exts = dataRangeExtensions()
		for _, svc := range s.services {
			exts = append(exts, svc.NewExtension())
		}
	}
	return datarange.New(datarange.Config{RangeID: id, NodeID: s.id.MemberID, DB: s.db, Start: d.Start, End: d.End, Generation: d.Generation, Extensions: exts, Logger: s.logger})
}

// Close stops the node and waits for all of its goroutines. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stopClientAPI()
		if s.httpSrv != nil {
			_ = s.httpSrv.Close()
		}
		s.cancel()
		if s.store != nil {
			s.store.Close()
		}
		if s.transport != nil {
			s.transport.Close()
		}
		if s.peerSrv != nil {
			s.peerSrv.Stop()
		}
		for _, l := range []net.Listener{s.peerLis, s.clientLis} {
			if l != nil {
				_ = l.Close()
			}
		}
		s.wg.Wait()
		if s.db != nil {
			if err := s.db.Close(); err != nil {
				s.closeErr = fmt.Errorf("close pebble: %w", err)
			}
		}
	})
	return s.closeErr
}

// stopGRPC stops a server gracefully, cutting long streams after a grace
// period.
func stopGRPC(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		srv.Stop()
		<-done
	}
}

// handlerRef lets the transport reach the store, which is created after it.
type handlerRef struct{ s *Server }

var errNotReady = errors.New("node is starting")

func (h handlerRef) st() *store.Store { return h.s.store }

func (h handlerRef) HandleRaft(id keys.RangeID, msgs []*raftpb.Message) {
	if st := h.st(); st != nil {
		st.HandleRaft(id, msgs)
	}
}

func (h handlerRef) NewIncomingSnapshot(id keys.RangeID) (*replica.IncomingSnapshot, error) {
	if st := h.st(); st != nil {
		if err := h.s.checkSnapshotFits(id); err != nil {
			return nil, err
		}
		return st.NewIncomingSnapshot(id)
	}
	return nil, errNotReady
}

func (h handlerRef) HandleSnapshot(id keys.RangeID, m *raftpb.Message, data *replica.IncomingSnapshot) error {
	if st := h.st(); st != nil {
		if err := h.s.checkSnapshotSpan(id, data); err != nil {
			data.Close()
			return err
		}
		return st.HandleSnapshot(id, m, data)
	}
	data.Close()
	return errNotReady
}

func (h handlerRef) ReportUnreachable(id keys.RangeID, peer uint64) {
	if st := h.st(); st != nil {
		st.ReportUnreachable(id, peer)
	}
}
