package cluster

import (
	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/synod-io/synod/internal/keys"
)

// SetAlarm raises (active) or disarms an alarm of a member.
func SetAlarm(w pebble.Writer, memberID uint64, alarm pb.AlarmType, active bool) error {
	k := keys.AlarmKey(memberID, int32(alarm))
	if active {
		return w.Set(k, nil, nil)
	}
	return w.Delete(k, nil)
}

// ListAlarms reads the active alarms, ordered by member.
func ListAlarms(r pebble.Reader) ([]*pb.AlarmMember, error) {
	span := keys.AlarmSpan()
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*pb.AlarmMember
	for valid := it.First(); valid; valid = it.Next() {
		id, alarm, err := keys.DecodeAlarmKey(it.Key())
		if err != nil {
			return nil, err
		}
		out = append(out, &pb.AlarmMember{MemberID: id, Alarm: pb.AlarmType(alarm)})
	}
	return out, it.Error()
}

// NoSpace reports whether any member has raised the NOSPACE alarm.
func NoSpace(r pebble.Reader) (bool, error) {
	alarms, err := ListAlarms(r)
	if err != nil {
		return false, err
	}
	for _, a := range alarms {
		if a.Alarm == pb.AlarmType_NOSPACE {
			return true, nil
		}
	}
	return false, nil
}
