// Package tlsconfig loads the TLS certificates, keys and CA bundles of a
// node's client and peer listeners from PEM files, and reloads them when the
// files change, without a restart.
//
// A Source watches one set of files (certificate, key, trusted CA). Every new
// handshake stats the files; when a file's modification time, size or
// inode changed (rewritten in place or replaced by rename), it is parsed
// again and the result cached, so handshakes between changes cost a few
// stats and no parsing. A replacement that does not load
// (a certificate written before its key, a truncated file) is reported and
// the last good material is kept until the files load again.
//
// ServerConfig returns a tls.Config whose GetConfigForClient serves the
// current certificate and CA pool; ClientCredentials returns gRPC transport
// credentials that build the client side afresh for every connection, so
// peer connections pick up rotated certificates and CAs too.
package tlsconfig
