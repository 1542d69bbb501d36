package gateway

// route is one HTTP path of the gateway: the gRPC method it calls.
type route struct {
	method string // full gRPC method name, "/service/Method"
}

// routes maps the gateway's paths (under /v3/; see canonicalPath for the
// older prefixes) to gRPC methods. The etcd paths are those of etcd's own
// gateway (grpc-gateway annotations in etcd's rpc.proto, v3lock.proto and
// v3election.proto); Synod's own services live under /v3/synod/.
var routes = map[string]route{
	// etcdserverpb.KV
	"/v3/kv/range":       {"/etcdserverpb.KV/Range"},
	"/v3/kv/put":         {"/etcdserverpb.KV/Put"},
	"/v3/kv/deleterange": {"/etcdserverpb.KV/DeleteRange"},
	"/v3/kv/txn":         {"/etcdserverpb.KV/Txn"},
	"/v3/kv/compaction":  {"/etcdserverpb.KV/Compact"},

	// etcdserverpb.Watch
	"/v3/watch": {"/etcdserverpb.Watch/Watch"},

	// etcdserverpb.Lease (the /v3/kv/lease/ paths are etcd's older ones,
	// which its gateway still serves)
	"/v3/lease/grant":         {"/etcdserverpb.Lease/LeaseGrant"},
	"/v3/lease/revoke":        {"/etcdserverpb.Lease/LeaseRevoke"},
	"/v3/kv/lease/revoke":     {"/etcdserverpb.Lease/LeaseRevoke"},
	"/v3/lease/keepalive":     {"/etcdserverpb.Lease/LeaseKeepAlive"},
	"/v3/lease/timetolive":    {"/etcdserverpb.Lease/LeaseTimeToLive"},
	"/v3/kv/lease/timetolive": {"/etcdserverpb.Lease/LeaseTimeToLive"},
	"/v3/lease/leases":        {"/etcdserverpb.Lease/LeaseLeases"},
	"/v3/kv/lease/leases":     {"/etcdserverpb.Lease/LeaseLeases"},

	// etcdserverpb.Cluster
	"/v3/cluster/member/add":     {"/etcdserverpb.Cluster/MemberAdd"},
	"/v3/cluster/member/remove":  {"/etcdserverpb.Cluster/MemberRemove"},
	"/v3/cluster/member/update":  {"/etcdserverpb.Cluster/MemberUpdate"},
	"/v3/cluster/member/list":    {"/etcdserverpb.Cluster/MemberList"},
	"/v3/cluster/member/promote": {"/etcdserverpb.Cluster/MemberPromote"},

	// etcdserverpb.Maintenance
	"/v3/maintenance/alarm":               {"/etcdserverpb.Maintenance/Alarm"},
	"/v3/maintenance/status":              {"/etcdserverpb.Maintenance/Status"},
	"/v3/maintenance/defragment":          {"/etcdserverpb.Maintenance/Defragment"},
	"/v3/maintenance/hash":                {"/etcdserverpb.Maintenance/Hash"},
	"/v3/maintenance/hashkv":              {"/etcdserverpb.Maintenance/HashKV"},
	"/v3/maintenance/snapshot":            {"/etcdserverpb.Maintenance/Snapshot"},
	"/v3/maintenance/transfer-leadership": {"/etcdserverpb.Maintenance/MoveLeader"},
	"/v3/maintenance/downgrade":           {"/etcdserverpb.Maintenance/Downgrade"},

	// etcdserverpb.Auth
	"/v3/auth/enable":        {"/etcdserverpb.Auth/AuthEnable"},
	"/v3/auth/disable":       {"/etcdserverpb.Auth/AuthDisable"},
	"/v3/auth/status":        {"/etcdserverpb.Auth/AuthStatus"},
	"/v3/auth/authenticate":  {"/etcdserverpb.Auth/Authenticate"},
	"/v3/auth/user/add":      {"/etcdserverpb.Auth/UserAdd"},
	"/v3/auth/user/get":      {"/etcdserverpb.Auth/UserGet"},
	"/v3/auth/user/list":     {"/etcdserverpb.Auth/UserList"},
	"/v3/auth/user/delete":   {"/etcdserverpb.Auth/UserDelete"},
	"/v3/auth/user/changepw": {"/etcdserverpb.Auth/UserChangePassword"},
	"/v3/auth/user/grant":    {"/etcdserverpb.Auth/UserGrantRole"},
	"/v3/auth/user/revoke":   {"/etcdserverpb.Auth/UserRevokeRole"},
	"/v3/auth/role/add":      {"/etcdserverpb.Auth/RoleAdd"},
	"/v3/auth/role/get":      {"/etcdserverpb.Auth/RoleGet"},
	"/v3/auth/role/list":     {"/etcdserverpb.Auth/RoleList"},
	"/v3/auth/role/delete":   {"/etcdserverpb.Auth/RoleDelete"},
	"/v3/auth/role/grant":    {"/etcdserverpb.Auth/RoleGrantPermission"},
	"/v3/auth/role/revoke":   {"/etcdserverpb.Auth/RoleRevokePermission"},

	// v3lockpb.Lock and v3electionpb.Election (etcd's paths)
	"/v3/lock/lock":         {"/v3lockpb.Lock/Lock"},
	"/v3/lock/unlock":       {"/v3lockpb.Lock/Unlock"},
	"/v3/election/campaign": {"/v3electionpb.Election/Campaign"},
	"/v3/election/proclaim": {"/v3electionpb.Election/Proclaim"},
	"/v3/election/leader":   {"/v3electionpb.Election/Leader"},
	"/v3/election/observe":  {"/v3electionpb.Election/Observe"},
	"/v3/election/resign":   {"/v3electionpb.Election/Resign"},

	// Synod's own services
	"/v3/synod/groups/join":  {"/synodpb.Groups/Join"},
	"/v3/synod/groups/leave": {"/synodpb.Groups/Leave"},
	"/v3/synod/groups/list":  {"/synodpb.Groups/List"},
	"/v3/synod/groups/watch": {"/synodpb.Groups/Watch"},

	"/v3/synod/limits/set":     {"/synodpb.Limits/SetLimit"},
	"/v3/synod/limits/get":     {"/synodpb.Limits/GetLimit"},
	"/v3/synod/limits/list":    {"/synodpb.Limits/ListLimits"},
	"/v3/synod/limits/delete":  {"/synodpb.Limits/DeleteLimit"},
	"/v3/synod/limits/take":    {"/synodpb.Limits/Take"},
	"/v3/synod/limits/refund":  {"/synodpb.Limits/Refund"},
	"/v3/synod/limits/acquire": {"/synodpb.Limits/Acquire"},
	"/v3/synod/limits/release": {"/synodpb.Limits/Release"},
	"/v3/synod/limits/stats":   {"/synodpb.Limits/LimitStats"},

	"/v3/synod/ranges/list":  {"/synodpb.Ranges/ListRanges"},
	"/v3/synod/ranges/split": {"/synodpb.Ranges/SplitRange"},
	// The job queues (api/queuepb)
	"/v3/synod/queue/push":           {"/synod.queue.v1.Queue/Push"},
	"/v3/synod/queue/claim":          {"/synod.queue.v1.Queue/Claim"},
	"/v3/synod/queue/complete":       {"/synod.queue.v1.Queue/Complete"},
	"/v3/synod/queue/fail":           {"/synod.queue.v1.Queue/Fail"},
	"/v3/synod/queue/extend":         {"/synod.queue.v1.Queue/Extend"},
	"/v3/synod/queue/progress":       {"/synod.queue.v1.Queue/Progress"},
	"/v3/synod/queue/get":            {"/synod.queue.v1.Queue/Get"},
	"/v3/synod/queue/list":           {"/synod.queue.v1.Queue/List"},
	"/v3/synod/queue/wait":           {"/synod.queue.v1.Queue/Wait"},
	"/v3/synod/queue/cancel":         {"/synod.queue.v1.Queue/Cancel"},
	"/v3/synod/queue/redrive":        {"/synod.queue.v1.Queue/Redrive"},
	"/v3/synod/queue/purge":          {"/synod.queue.v1.Queue/Purge"},
	"/v3/synod/queue/configure":      {"/synod.queue.v1.Queue/Configure"},
	"/v3/synod/queue/stats":          {"/synod.queue.v1.Queue/Stats"},
	"/v3/synod/queue/putschedule":    {"/synod.queue.v1.Queue/PutSchedule"},
	"/v3/synod/queue/deleteschedule": {"/synod.queue.v1.Queue/DeleteSchedule"},
	"/v3/synod/queue/listschedules":  {"/synod.queue.v1.Queue/ListSchedules"},
}

// Routes returns the gateway's paths (under /v3/) with the full gRPC
// method, "/service/Method", each calls: a copy, for the checks that every
// method a node serves has a path.
func Routes() map[string]string {
	out := make(map[string]string, len(routes))
	for p, r := range routes {
		out[p] = r.method
	}
	return out
}

// Prefixes are the URL path prefixes the gateway answers: etcd's /v3/, and
// the /v3beta/ and /v3alpha/ of etcd 3.3 and 3.2, which it maps to /v3/.
var Prefixes = []string{"/v3/", "/v3beta/", "/v3alpha/"}

// canonicalPath maps the older prefixes to /v3/.
func canonicalPath(p string) string {
	for _, old := range Prefixes[1:] {
		if len(p) >= len(old) && p[:len(old)] == old {
			return "/v3/" + p[len(old):]
		}
	}
	return p
}
