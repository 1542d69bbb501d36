package server

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/rangedesc"
	"github.com/synod-io/synod/internal/replica"
)

// ident is who this node is, written once when its data dir is created.
type ident struct {
	ClusterID uint64
	MemberID  uint64
	Name      string
}

func (id ident) encode() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, id.ClusterID)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, id.MemberID)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, id.Name)
}

func decodeIdent(data []byte) (ident, error) {
	var id ident
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return id, protowire.ParseError(n)
		}
		data = data[n:]
		switch {
		case typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return id, protowire.ParseError(n)
			}
			data = data[n:]
			switch num {
			case 1:
				id.ClusterID = v
			case 2:
				id.MemberID = v
			}
		case typ == protowire.BytesType:
			v, n := protowire.ConsumeString(data)
			if n < 0 {
				return id, protowire.ParseError(n)
			}
			data = data[n:]
			if num == 3 {
				id.Name = v
			}
		default:
			return id, errors.New("unexpected field type")
		}
	}
	if id.ClusterID == 0 || id.MemberID == 0 {
		return id, errors.New("identity lacks cluster or member id")
	}
	return id, nil
}

func loadIdent(db *pebble.DB) (ident, bool, error) {
	v, closer, err := db.Get(keys.NodeIdentKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return ident{}, false, nil
	}
	if err != nil {
		return ident{}, false, fmt.Errorf("read node identity: %w", err)
	}
	defer closer.Close()
	id, err := decodeIdent(v)
	if err != nil {
		return ident{}, false, fmt.Errorf("decode node identity: %w", err)
	}
	return id, true, nil
}

// bootstrap creates the state of a new node of a new cluster. Every initial
// member writes the same first range (same voters, same member records), so
// they agree without exchanging anything; the peer secret, which they must
// share too, is the configured one (or this node's own, when it is the only
// member). It returns the identity and the peer secret (nil: peer TLS
// authenticates).
func bootstrap(db *pebble.DB, cfg *Config, peerURL string, peerTLS bool) (ident, []byte, error) {
	spec := cfg.InitialCluster
	if spec == "" {
		spec = cfg.Name + "=" + peerURL
	}
	secret, err := newClusterSecret(cfg.PeerSecret, spec)
	if err != nil {
		return ident{}, nil, err
	}
	if secret == nil && !peerTLS {
		return ident{}, nil, errNeedPeerSecret
	}
	b := db.NewBatch()
	defer b.Close()
	id, err := bootstrapCluster(b, cfg.Name, spec, cfg.ClusterToken, kv.Meta{Revision: replica.InitialRevision}, secret, cfg.DataRangeSplits)
	return id, secret, err
}

// bootstrapCluster adds to b, and commits with a sync, the ranges of a new
// cluster (the system range, and the data range with the given KV
// counters), and this node's identity and peer
// secret (nil: none). b may already hold the range's data (a restored
// backup).
func bootstrapCluster(b *pebble.Batch, name, spec, token string, m kv.Meta, secret []byte, splits [][]byte) (ident, error) {
	members, err := cluster.ParseInitialCluster(spec)
	if err != nil {
		return ident{}, err
	}
	cluster.AssignIDs(members, token)
	i := slices.IndexFunc(members, func(m cluster.Member) bool { return m.Name == name })
	if i < 0 {
		return ident{}, fmt.Errorf("name %q is not in the initial cluster %q", name, spec)
	}
	id := ident{ClusterID: cluster.ClusterID(members, token), MemberID: members[i].ID, Name: name}
	voters := make([]uint64, len(members))
	for j, m := range members {
		voters[j] = m.ID
	}
	if err := replica.BootstrapWith(b, keys.SystemRangeID, voters, kv.Meta{}); err != nil {
		return ident{}, fmt.Errorf("bootstrap the system range: %w", err)
	}
	descs := rangedesc.Split(splits)
	for _, d := range descs {
		dm := m
		if d.RangeID != keys.FirstDataRangeID {
			// The restored data, if any, is the first range's.
			dm = kv.Meta{Revision: replica.InitialRevision}
		}
		if err := replica.BootstrapWith(b, d.RangeID, voters, dm); err != nil {
			return ident{}, fmt.Errorf("bootstrap data range %d: %w", d.RangeID, err)
		}
		if err := rangedesc.PutLocal(b, d); err != nil {
			return ident{}, err
		}
	}
	if err := putLayout(b); err != nil {
		return ident{}, err
	}
	for _, m := range members {
		if err := cluster.PutMember(b, m); err != nil {
			return ident{}, err
		}
	}
	for _, d := range descs {
		if err := rangedesc.Put(b, d); err != nil {
			return ident{}, err
		}
	}
	if err := b.Set(keys.NodeIdentKey(), id.encode(), nil); err != nil {
		return ident{}, err
	}
	if err := putPeerSecret(b, secret); err != nil {
		return ident{}, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return ident{}, fmt.Errorf("commit bootstrap: %w", err)
	}
	return id, nil
}

// putLayout records in b the version of the data layout this node writes.
func putLayout(b *pebble.Batch) error {
	return b.Set(keys.NodeLayoutKey(), []byte{keys.Layout}, nil)
}

// ErrOldLayout is the refusal of a data dir written before Synod had a
// system range and data ranges.
var ErrOldLayout = errors.New("this data dir was written by a Synod without ranges (one Raft group for everything), " +
	"which this version does not open: take a backup with the Synod that wrote it " +
	"(synod snapshot save, or etcdctl snapshot save), then restore it with this one (synod snapshot restore)")

// checkLayout refuses a data dir whose layout this code does not read.
func checkLayout(r pebble.Reader) error {
	v, closer, err := r.Get(keys.NodeLayoutKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return ErrOldLayout
	}
	if err != nil {
		return fmt.Errorf("read data layout: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] != keys.Layout {
		return fmt.Errorf("data dir layout version %v, this Synod reads version %d: use the Synod that wrote it", v, keys.Layout)
	}
	return nil
}
