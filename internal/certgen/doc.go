// Package certgen makes throwaway X.509 certificates for trying TLS
// locally and for tests: a self-signed CA, and certificates it signs for
// servers, peers (server and client use) and clients. Keys are ECDSA P-256.
//
// These certificates are for development: the CA key is written next to
// the certificates, unencrypted. Production clusters use certificates from
// their own PKI.
package certgen
