package peerauth

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// SecretLen is the length of the secrets NewSecret makes, and the least a
// peer secret may have.
const SecretLen = 32

// maxSecretLen bounds a peer secret (a file of the wrong kind is refused
// rather than read whole into every handshake).
const maxSecretLen = 1024

// NewSecret returns a new random peer secret.
func NewSecret() ([]byte, error) {
	b := make([]byte, SecretLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("make a peer secret: %w", err)
	}
	return b, nil
}

// CheckSecret checks that a peer secret has a usable length.
func CheckSecret(secret []byte) error {
	if len(secret) < SecretLen || len(secret) > maxSecretLen {
		return fmt.Errorf("a peer secret has %d to %d bytes, got %d", SecretLen, maxSecretLen, len(secret))
	}
	return nil
}

// Format returns the text form of a peer secret: hex digits and a newline,
// as `openssl rand -hex 32` writes too.
func Format(secret []byte) []byte {
	return append([]byte(hex.EncodeToString(secret)), '\n')
}

// Parse reads the text form of a peer secret (hex digits; white space
// around them is ignored) and checks it.
func Parse(text []byte) ([]byte, error) {
	text = bytes.TrimSpace(text)
	secret := make([]byte, hex.DecodedLen(len(text)))
	if _, err := hex.Decode(secret, text); err != nil {
		return nil, fmt.Errorf("a peer secret is written in hex digits: %w", err)
	}
	if len(secret) < SecretLen {
		return nil, fmt.Errorf("a peer secret has at least %d bytes (%d hex digits), got %d", SecretLen, 2*SecretLen, len(secret))
	}
	if err := CheckSecret(secret); err != nil {
		return nil, err
	}
	return secret, nil
}
