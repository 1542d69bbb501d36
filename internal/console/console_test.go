package console

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/metrics"
)

type fakeBackend struct {
	ov *Overview
}

func (f fakeBackend) Identify(context.Context) (*auth.State, string, error) {
	return &auth.State{}, "", nil
}

func (f fakeBackend) Overview(context.Context) (*Overview, error) { return f.ov, nil }

func (f fakeBackend) Samples() ([]metrics.Sample, time.Duration) { return nil, time.Second }

func (f fakeBackend) Queues(context.Context) ([]string, error) { return nil, nil }

// TestOverviewJSON checks what the console makes of the members'
// statuses: roles, health, and the lag counted from the leader's last
// index as `synod status` counts it.
func TestOverviewJSON(t *testing.T) {
	status := func(id, leader, index, applied uint64, errs ...string) *pb.StatusResponse {
		return &pb.StatusResponse{Header: &pb.ResponseHeader{MemberId: id}, Leader: leader, RaftIndex: index, RaftAppliedIndex: applied, Errors: errs}
	}
	b := fakeBackend{ov: &Overview{
		ClusterID: 0xc1, MemberID: 1, Leader: 2,
		Members: []Member{
			{ID: 3, Name: "n3", Err: errors.New("member 3 did not answer")},
			{ID: 2, Name: "n2", Status: status(2, 2, 100, 100)},
			{ID: 1, Name: "n1", Status: status(1, 2, 98, 90)},
			{ID: 4, Name: "n4", Learner: true, Status: &pb.StatusResponse{Leader: 2, RaftIndex: 100, RaftAppliedIndex: 100, IsLearner: true, Errors: []string{"memberID:2 alarm:NOSPACE"}}},
		},
		Alarms: []*pb.AlarmMember{{MemberID: 2, Alarm: pb.AlarmType_NOSPACE}},
		Ranges: []Range{{ID: 1, Leader: 2, Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}},
	}}
	rec := httptest.NewRecorder()
	New(b, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/api/overview", nil))
	if rec.Code != 200 {
		t.Fatalf("got status %d (%s), want 200", rec.Code, rec.Body)
	}
	var got overviewJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, role string
		healthy    bool
		lag        int64
	}{
		{"n1", "follower", true, 10},
		{"n2", "leader", true, 0},
		{"n3", "unknown", false, -1},
		{"n4", "learner", false, 0}, // the alarm makes it unhealthy
	}
	if len(got.Members) != len(want) {
		t.Fatalf("got %d members, want %d", len(got.Members), len(want))
	}
	for i, w := range want {
		m := got.Members[i]
		if m.Name != w.name || m.Role != w.role || m.Healthy != w.healthy || m.Lag != w.lag {
			t.Errorf("member %d: got %s role %s healthy %v lag %d, want %s role %s healthy %v lag %d",
				i, m.Name, m.Role, m.Healthy, m.Lag, w.name, w.role, w.healthy, w.lag)
		}
	}
	if got.Members[2].Errors[0] != "member 3 did not answer" {
		t.Errorf("unreachable member: got errors %q, want why", got.Members[2].Errors)
	}
	if got.Leader != "2" || got.ClusterID != "c1" || got.Health.Healthy != 2 || got.Health.Total != 4 {
		t.Errorf("got leader %q, cluster %q, %d of %d healthy; want 2, c1, 2 of 4", got.Leader, got.ClusterID, got.Health.Healthy, got.Health.Total)
	}
	if len(got.Alarms) != 1 || got.Alarms[0].Alarm != "NOSPACE" || got.Alarms[0].MemberID != "2" {
		t.Errorf("got alarms %+v, want NOSPACE of 2", got.Alarms)
	}
	if r := got.Ranges[0]; len(r.Voters) != 3 || len(r.Learners) != 1 || r.Leader != "2" || r.End != nil {
		t.Errorf("got range %+v, want 3 voters, 1 learner, leader 2, no end", r)
	}
}
