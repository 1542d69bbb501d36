package cluster

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseInitialCluster(t *testing.T) {
	got, err := ParseInitialCluster("n1=127.0.0.1:2380, n2=http://127.0.0.1:22380,n3=https://h3:1")
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{
		{Name: "n1", PeerURLs: []string{"http://127.0.0.1:2380"}},
		{Name: "n2", PeerURLs: []string{"http://127.0.0.1:22380"}},
		{Name: "n3", PeerURLs: []string{"https://h3:1"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "n1", "n1=", "=a:1", "n1=a:1,n1=b:2", "n1=a:1,n2=a:1", "n1=ftp://a:1", "n1=a", "n1=http://a:1/x"} {
		if _, err := ParseInitialCluster(bad); err == nil {
			t.Errorf("ParseInitialCluster(%q): got no error, want one", bad)
		}
	}
}

func TestIDsAreStableAndDistinct(t *testing.T) {
	ms, _ := ParseInitialCluster("n1=a:1,n2=a:2,n3=a:3")
	AssignIDs(ms, "tok")
	seen := map[uint64]bool{}
	for _, m := range ms {
		if m.ID == 0 || seen[m.ID] {
			t.Fatalf("member %s: id %x is zero or repeated", m.Name, m.ID)
		}
		seen[m.ID] = true
	}
	again, _ := ParseInitialCluster("n3=a:3,n1=a:1,n2=a:2")
	AssignIDs(again, "tok")
	if got, want := ClusterID(again, "tok"), ClusterID(ms, "tok"); got != want {
		t.Fatalf("cluster id depends on member order: got %x, want %x", got, want)
	}
	other, _ := ParseInitialCluster("n1=a:1,n2=a:2,n3=a:3")
	AssignIDs(other, "other-token")
	if ClusterID(other, "other-token") == ClusterID(ms, "tok") {
		t.Fatalf("cluster id ignores the token")
	}
}

func TestMemberRoundTrip(t *testing.T) {
	in := Member{ID: 9, Name: "n1", PeerURLs: []string{"http://a:1"}, ClientURLs: []string{"http://a:2", "http://b:2"}, IsLearner: true}
	out, err := DecodeMember(in.Encode())
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: got %+v (%v), want %+v", out, err, in)
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:2380":           "http://127.0.0.1:2380",
		" http://h:1/ ":            "http://h:1",
		"https://[::1]:65535":      "https://[::1]:65535",
		"http://node-1.example:80": "http://node-1.example:80",
	} {
		if got, err := NormalizeURL(in); err != nil || got != want {
			t.Errorf("NormalizeURL(%q): got %q, %v; want %q", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"http://127.0.0.1:99999": "not in 1-65535",
		"http://127.0.0.1:0":     "not in 1-65535",
		":0":                     "no host",
		"http://:2380":           "no host",
		"http://127.0.0.1":       "want host:port",
		"http://127.0.0.1:":      "want host:port",
		"127.0.0.1:http":         "parse url",
		"unix://sock:1":          "scheme must be http or https",
		"ftp://h:1":              "scheme must be http or https",
		"http://u:p@h:1":         "must not have a user",
		"http://h:1/path":        "must not have a path",
		"http://h:1?x=1":         "must not have a query",
		"http://h:1#f":           "must not have a query or fragment",
	} {
		if _, err := NormalizeURL(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("NormalizeURL(%q): got %v, want an error saying %q", in, err, why)
		}
	}
}
