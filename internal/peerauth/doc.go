// Package peerauth authenticates the connections between the members of a
// cluster that run without peer TLS. Every member holds the cluster's peer
// secret (random bytes made when the cluster is bootstrapped, kept in each
// member's data dir and never replicated); before gRPC speaks on a
// connection, both ends prove that they hold it:
//
//	client -> server  "synodpa1" | client cluster ID (8) | client nonce (32)
//	server -> client  server nonce (32) | server cluster ID (8) | server MAC (32)
//	client -> server  client MAC (32)
//	server -> client  verdict (1): 0 accepted, 1 bad proof, 2 wrong cluster
//
// Each MAC is HMAC-SHA256 keyed by the secret over a direction label, both
// cluster IDs and both nonces, so a proof is valid for one connection and
// one direction only: a recorded handshake cannot be replayed (the other end
// picks a fresh nonce), nor a server's proof reflected as a client's. The
// client checks the server's proof before it sends its own, so it never
// proves anything to an impostor. A client cluster ID of 0 means the dialing
// node does not know its cluster yet (a node added with member add looking
// itself up); otherwise both ends must be of the same cluster.
//
// Only the handshake costs anything: afterwards the connection is the plain
// TCP connection, with no work per message. It authenticates who opened the
// connection; it neither encrypts nor protects the bytes that follow, so an
// attacker who can read or take over TCP connections on the network path is
// not kept out: peer TLS is for that.
//
// Credentials returns the handshake as gRPC transport credentials, for the
// peer server (grpc.Creds) and every connection to a peer
// (grpc.WithTransportCredentials).
package peerauth
