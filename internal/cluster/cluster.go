package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/synod-io/synod/internal/keys"
)

// Member is one node of the cluster.
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// ParseInitialCluster parses "n1=127.0.0.1:2380,n2=http://10.0.0.2:2380".
// Addresses without a scheme get http://. Names and peer URLs must be unique.
func ParseInitialCluster(s string) ([]Member, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("initial cluster is empty")
	}
	var members []Member
	names := map[string]bool{}
	urls := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("initial cluster entry %q: want name=host:port", part)
		}
		u, err := NormalizeURL(addr)
		if err != nil {
			return nil, fmt.Errorf("initial cluster entry %q: %w", part, err)
		}
		if names[name] {
			// etcd allows one name with several peer URLs; Synod keeps one URL per name.
			return nil, fmt.Errorf("initial cluster names %q twice", name)
		}
		if urls[u] {
			return nil, fmt.Errorf("initial cluster names peer URL %s twice", u)
		}
		names[name], urls[u] = true, true
		members = append(members, Member{Name: name, PeerURLs: []string{u}})
	}
	return members, nil
}

// NormalizeURL turns "host:port" or "scheme://host:port" into a URL string
// with a scheme, and checks it as etcd checks member URLs, more strictly:
// the scheme is http or https (Synod has no unix sockets), a host and a port
// from 1 to 65535 are given, and there is no user, path (but "/"), query or
// fragment. A URL that no member can be reached at is refused here rather
// than stored in the membership.
func NormalizeURL(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("parse url %q: %w", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("url %q: scheme must be http or https", addr)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" {
		return "", fmt.Errorf("url %q: want host:port", addr)
	}
	if host == "" {
		return "", fmt.Errorf("url %q: no host", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 32); err != nil || n == 0 || n > 65535 {
		return "", fmt.Errorf("url %q: port %s is not in 1-65535", addr, port)
	}
	if u.User != nil {
		return "", fmt.Errorf("url %q: must not have a user", addr)
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("url %q: must not have a path", addr)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("url %q: must not have a query or fragment", addr)
	}
	return u.Scheme + "://" + u.Host, nil
}

// HostPort returns the host:port of a URL made by NormalizeURL.
func HostPort(u string) string {
	if _, rest, ok := strings.Cut(u, "://"); ok {
		return rest
	}
	return u
}

// MemberID derives the ID of a member from its name, peer URLs and the
// cluster token. It is never zero (zero means "none" to Raft).
func MemberID(name string, peerURLs []string, token string) uint64 {
	urls := slices.Clone(peerURLs)
	sort.Strings(urls)
	h := sha256.New()
	fmt.Fprintf(h, "synod-member\x00%s\x00%s\x00%s", token, name, strings.Join(urls, "\x00"))
	id := binary.BigEndian.Uint64(h.Sum(nil))
	if id == 0 {
		id = 1
	}
	return id
}

// ClusterID derives the cluster ID from the initial members and the token.
func ClusterID(members []Member, token string) uint64 {
	ids := make([]uint64, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	h := sha256.New()
	fmt.Fprintf(h, "synod-cluster\x00%s", token)
	for _, id := range ids {
		_ = binary.Write(h, binary.BigEndian, id)
	}
	id := binary.BigEndian.Uint64(h.Sum(nil))
	if id == 0 {
		id = 1
	}
	return id
}

// AssignIDs sets the ID of every member from its name and peer URLs.
func AssignIDs(members []Member, token string) {
	for i := range members {
		members[i].ID = MemberID(members[i].Name, members[i].PeerURLs, token)
	}
}

const (
	fieldID        protowire.Number = 1
	fieldName      protowire.Number = 2
	fieldPeerURL   protowire.Number = 3
	fieldClientURL protowire.Number = 4
	fieldLearner   protowire.Number = 5
)

// Encode returns the stored form of m.
func (m *Member) Encode() []byte {
	var b []byte
	b = protowire.AppendTag(b, fieldID, protowire.VarintType)
	b = protowire.AppendVarint(b, m.ID)
	b = protowire.AppendTag(b, fieldName, protowire.BytesType)
	b = protowire.AppendString(b, m.Name)
	for _, u := range m.PeerURLs {
		b = protowire.AppendTag(b, fieldPeerURL, protowire.BytesType)
		b = protowire.AppendString(b, u)
	}
	for _, u := range m.ClientURLs {
		b = protowire.AppendTag(b, fieldClientURL, protowire.BytesType)
		b = protowire.AppendString(b, u)
	}
	if m.IsLearner {
		b = protowire.AppendTag(b, fieldLearner, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// DecodeMember parses the stored form of a member.
func DecodeMember(data []byte) (Member, error) {
	var m Member
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return m, fmt.Errorf("decode member: %w", protowire.ParseError(n))
		}
		data = data[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return m, fmt.Errorf("decode member field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
			switch num {
			case fieldID:
				m.ID = v
			case fieldLearner:
				m.IsLearner = v != 0
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeString(data)
			if n < 0 {
				return m, fmt.Errorf("decode member field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
			switch num {
			case fieldName:
				m.Name = v
			case fieldPeerURL:
				m.PeerURLs = append(m.PeerURLs, v)
			case fieldClientURL:
				m.ClientURLs = append(m.ClientURLs, v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return m, fmt.Errorf("decode member field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
		}
	}
	if m.ID == 0 {
		return m, errors.New("decode member: no id")
	}
	return m, nil
}

// PutMember writes m into the system keyspace.
func PutMember(w pebble.Writer, m Member) error {
	return w.Set(keys.MemberKey(m.ID), m.Encode(), nil)
}

// GetMember reads one member; ok is false if it does not exist.
func GetMember(r pebble.Reader, id uint64) (m Member, ok bool, err error) {
	v, closer, err := r.Get(keys.MemberKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return Member{}, false, nil
	}
	if err != nil {
		return Member{}, false, fmt.Errorf("read member %x: %w", id, err)
	}
	defer closer.Close()
	m, err = DecodeMember(v)
	return m, err == nil, err
}

// ListMembers reads every member, ordered by ID.
func ListMembers(r pebble.Reader) ([]Member, error) {
	span := keys.MemberSpan()
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Member
	for valid := it.First(); valid; valid = it.Next() {
		m, err := DecodeMember(it.Value())
		if err != nil {
			return nil, fmt.Errorf("list members: %w", err)
		}
		out = append(out, m)
	}
	return out, it.Error()
}

// DeleteMember removes a member record.
func DeleteMember(w pebble.Writer, id uint64) error {
	return w.Delete(keys.MemberKey(id), nil)
}

// MarkRemoved records that a member was removed from the cluster.
func MarkRemoved(w pebble.Writer, id uint64) error {
	return w.Set(keys.RemovedMemberKey(id), nil, nil)
}

// IsRemoved reports whether a member was removed from the cluster.
func IsRemoved(r pebble.Reader, id uint64) (bool, error) {
	_, closer, err := r.Get(keys.RemovedMemberKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read removed mark of %x: %w", id, err)
	}
	closer.Close()
	return true, nil
}
