package machine

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/synod-io/synod/internal/keys"
)

// The keys of a queue Q, all under keys.QueuesPrefix + Q + "/" (see
// internal/keys/doc.go).
const (
	kindConfig  = "config"
	kindHorizon = "horizon"
	kindJob     = "job"
	kindState   = "state"
	kindOut     = "out"
	kindIdem    = "idem"
	kindGroup   = "group"
	kindWorker  = "worker"
	kindCron    = "cron"
)

// QueuePrefix is the prefix of every key of queue q.
func QueuePrefix(q string) []byte { return []byte(keys.QueuesPrefix + q + "/") }

func queueKey(q, kind, rest string) []byte {
	b := make([]byte, 0, len(keys.QueuesPrefix)+len(q)+len(kind)+len(rest)+2)
	b = append(b, keys.QueuesPrefix...)
	b = append(b, q...)
	b = append(b, '/')
	b = append(b, kind...)
	if kind != kindConfig && kind != kindHorizon {
		b = append(b, '/')
		b = append(b, rest...)
	}
	return b
}

func idHex(id uint64) string {
	var b [16]byte
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = digits[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// ConfigKey is the key of queue q's settings.
func ConfigKey(q string) []byte { return queueKey(q, kindConfig, "") }

// JobKey is the key of job id's spec and payload.
func JobKey(q string, id uint64) []byte { return queueKey(q, kindJob, idHex(id)) }

// StateKey is the key of job id's state: watch it to follow the job.
func StateKey(q string, id uint64) []byte { return queueKey(q, kindState, idHex(id)) }

// OutKey is the key of job id's last error, progress and result.
func OutKey(q string, id uint64) []byte { return queueKey(q, kindOut, idHex(id)) }

// JobsPrefix is the prefix of queue q's job specs (kind "job").
func JobsPrefix(q string) []byte { return queueKey(q, kindJob, "") }

// StatesPrefix is the prefix of queue q's job states.
func StatesPrefix(q string) []byte { return queueKey(q, kindState, "") }

// CronPrefix is the prefix of queue q's schedules.
func CronPrefix(q string) []byte { return queueKey(q, kindCron, "") }

// horizonKey is the key of queue q's horizon: its pending jobs due later
// are cold (see cold.go).
func horizonKey(q string) []byte { return queueKey(q, kindHorizon, "") }

func idemKey(q, key string) []byte     { return queueKey(q, kindIdem, key) }
func groupKey(q, g string) []byte      { return queueKey(q, kindGroup, g) }
func workerKey(q, w string) []byte     { return queueKey(q, kindWorker, w) }
func cronKey(q, name string) []byte    { return queueKey(q, kindCron, name) }
func parseID(s string) (uint64, error) { return strconv.ParseUint(s, 16, 64) }

// parsedKey is a queue key taken apart.
type parsedKey struct {
	queue, kind, rest string
}

// parseKey splits a key under keys.QueuesPrefix.
func parseKey(k []byte) (parsedKey, error) {
	s, ok := strings.CutPrefix(string(k), keys.QueuesPrefix)
	if !ok {
		return parsedKey{}, fmt.Errorf("key %q is not a queue key", k)
	}
	q, rest, ok := strings.Cut(s, "/")
	if !ok || q == "" {
		return parsedKey{}, fmt.Errorf("queue key %s has no queue", hex.EncodeToString(k))
	}
	kind, rest, _ := strings.Cut(rest, "/")
	return parsedKey{queue: q, kind: kind, rest: rest}, nil
}

// ParseStateKey returns the job ID of a state key.
func ParseStateKey(k []byte) (uint64, error) {
	pk, err := parseKey(k)
	if err != nil {
		return 0, err
	}
	if pk.kind != kindState {
		return 0, fmt.Errorf("key %q is not a job state", k)
	}
	return parseID(pk.rest)
}
