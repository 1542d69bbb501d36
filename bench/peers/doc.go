// Package peers pins the programs of other projects that the bench command
// builds and runs beside Synod, as tools of this module of their own (see
// go.mod), so that their dependencies never meet the bench module's or
// Synod's:
//
//   - go.etcd.io/etcd/server/v3 at v3.6.16: the etcd binary, for the
//     etcd@3.6 system (the bench module embeds etcd 3.7's server);
//   - go.etcd.io/etcd/v3/tools/benchmark at v3.6.8: etcd's own benchmark
//     tool, which -etcd-tool runs against every system.
//
// The bench command builds them with `go build -C peers`. Nothing here is
// linked into Synod or the bench command.
package peers
