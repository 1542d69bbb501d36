// Package portmux serves gRPC and HTTP clients on one port, as etcd serves
// its gRPC API and its JSON gateway on the client port.
//
// A Mux accepts every connection of the port, terminates TLS when the port
// has it (offering ALPN h2 and http/1.1), and finds out what the client
// speaks before handing the connection over:
//
//   - HTTP/1 (ALPN http/1.1, or first bytes other than the HTTP/2 client
//     preface) goes to the HTTP server;
//   - HTTP/2 goes by the content-type of its first request: application/grpc
//     to the gRPC server (grpc-go's own server, through the listener GRPC
//     returns), anything else (curl over TLS, browsers) to the HTTP server.
//
// Reading the first request of an HTTP/2 connection needs care: gRPC
// clients wait for the server's SETTINGS frame before they send it, so the
// Mux sends an empty one, answers PINGs while it waits, and hides the
// client's acknowledgement of its SETTINGS from the server that gets the
// connection (see sniff). The bytes read are replayed, so the server sees
// the connection from its first byte. gRPC connections are then the gRPC
// server's alone: the Mux costs them nothing after the first request's
// headers, unlike grpc.Server.ServeHTTP (which etcd uses over TLS).
//
// Over TLS the gRPC server takes Credentials, which report the Mux's
// handshake (with the verified client certificate) as gRPC's TLS would, and
// the HTTP server's handlers see Request.TLS, for HTTP/2 as for HTTP/1.
package portmux
