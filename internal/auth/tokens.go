package auth

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultTokenTTL is how long a simple token lives unused (etcd's
// --auth-token-ttl default).
const DefaultTokenTTL = 300 * time.Second

// TokenConfig says which tokens a node issues and accepts, parsed from etcd's
// --auth-token syntax: "simple", or
// "jwt,pub-key=<path>,priv-key=<path>,sign-method=<alg>[,ttl=<duration>]".
type TokenConfig struct {
	// JWT selects signed JWT tokens; otherwise simple tokens.
	JWT        bool
	SignMethod string
	PubKeyPath string
	// PrivKeyPath may be empty: the node then verifies tokens but cannot
	// issue them.
	PrivKeyPath string
	// TTL is the lifetime of a JWT token (default 5 minutes).
	TTL time.Duration
}

// ParseTokenConfig parses an --auth-token value.
func ParseTokenConfig(spec string) (TokenConfig, error) {
	parts := strings.Split(spec, ",")
	switch parts[0] {
	case "", "simple":
		if len(parts) > 1 {
			return TokenConfig{}, fmt.Errorf("auth token %q: simple tokens take no options", spec)
		}
		return TokenConfig{}, nil
	case "jwt":
	default:
		return TokenConfig{}, fmt.Errorf("auth token %q: unknown token type %q (want simple or jwt)", spec, parts[0])
	}
	c := TokenConfig{JWT: true, TTL: 5 * time.Minute}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return TokenConfig{}, fmt.Errorf("auth token option %q: want key=value", p)
		}
		switch k {
		case "pub-key":
			c.PubKeyPath = v
		case "priv-key":
			c.PrivKeyPath = v
		case "sign-method":
			c.SignMethod = v
		case "ttl":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return TokenConfig{}, fmt.Errorf("auth token option ttl=%q: want a positive duration", v)
			}
			c.TTL = d
		default:
			return TokenConfig{}, fmt.Errorf("auth token option %q: unknown (want pub-key, priv-key, sign-method, ttl)", k)
		}
	}
	if c.PubKeyPath == "" || c.SignMethod == "" {
		return TokenConfig{}, errors.New("jwt auth token: pub-key and sign-method are required")
	}
	return c, nil
}

// Tokens issues and resolves the tokens of one node.
type Tokens struct {
	ttl time.Duration // of simple tokens
	now func() time.Time

	mu     sync.Mutex
	simple map[string]simpleToken
	seq    atomic.Uint64

	jwt *jwtKeys // nil for simple tokens
}

type simpleToken struct {
	user     string
	password []byte // the user's password hash when the token was assigned
	expires  time.Time
}

type jwtKeys struct {
	method jwt.SigningMethod
	priv   crypto.Signer // nil: verify only
	pub    crypto.PublicKey
	ttl    time.Duration
}

// NewTokens returns a node's token issuer. simpleTTL is the idle lifetime of
// simple tokens (DefaultTokenTTL if zero); now is the clock (time.Now if nil).
func NewTokens(cfg TokenConfig, simpleTTL time.Duration, now func() time.Time) (*Tokens, error) {
	if simpleTTL <= 0 {
		simpleTTL = DefaultTokenTTL
	}
	if now == nil {
		now = time.Now
	}
	t := &Tokens{ttl: simpleTTL, now: now, simple: map[string]simpleToken{}}
	if cfg.JWT {
		k, err := loadJWTKeys(cfg)
		if err != nil {
			return nil, err
		}
		t.jwt = k
	}
	return t, nil
}

func loadJWTKeys(cfg TokenConfig) (*jwtKeys, error) {
	m := jwt.GetSigningMethod(cfg.SignMethod)
	if m == nil || m == jwt.SigningMethodNone || strings.HasPrefix(cfg.SignMethod, "HS") {
		return nil, fmt.Errorf("jwt sign-method %q is not supported (want RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA)", cfg.SignMethod)
	}
	k := &jwtKeys{method: m, ttl: cfg.TTL}
	pubPEM, err := os.ReadFile(cfg.PubKeyPath)
	if err != nil {
		return nil, fmt.Errorf("read jwt public key: %w", err)
	}
	var privPEM []byte
	if cfg.PrivKeyPath != "" {
		if privPEM, err = os.ReadFile(cfg.PrivKeyPath); err != nil {
			return nil, fmt.Errorf("read jwt private key: %w", err)
		}
	}
	alg := cfg.SignMethod
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		if k.pub, err = jwt.ParseRSAPublicKeyFromPEM(pubPEM); err == nil && privPEM != nil {
			k.priv, err = jwt.ParseRSAPrivateKeyFromPEM(privPEM)
		}
	case strings.HasPrefix(alg, "ES"):
		if k.pub, err = jwt.ParseECPublicKeyFromPEM(pubPEM); err == nil && privPEM != nil {
			k.priv, err = jwt.ParseECPrivateKeyFromPEM(privPEM)
		}
	case alg == "EdDSA":
		if k.pub, err = jwt.ParseEdPublicKeyFromPEM(pubPEM); err == nil && privPEM != nil {
			var p crypto.PrivateKey
			if p, err = jwt.ParseEdPrivateKeyFromPEM(privPEM); err == nil {
				k.priv = p.(crypto.Signer)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("parse jwt keys for %s: %w", alg, err)
	}
	return k, nil
}

// Simple reports whether the node issues simple tokens (assigned through
// Raft so that every node knows them) rather than self-contained JWTs.
func (t *Tokens) Simple() bool { return t.jwt == nil }

// NewSimpleToken returns a fresh random simple token.
func (t *Tokens) NewSimpleToken() (string, error) {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate simple token: %w", err)
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b[:]) + "." + strconv.FormatUint(t.seq.Add(1), 10), nil
}

// Register records a simple token assigned through Raft.
func (t *Tokens) Register(tok Token) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.simple[tok.Token] = simpleToken{user: tok.User, password: tok.Password, expires: t.now().Add(t.ttl)}
}

// SignJWT issues a JWT for user at auth revision rev.
func (t *Tokens) SignJWT(user string, rev uint64) (string, error) {
	if t.jwt == nil || t.jwt.priv == nil {
		return "", errors.New("this node has no jwt private key")
	}
	claims := jwt.MapClaims{
		"username": user,
		"revision": rev,
		"exp":      t.now().Add(t.jwt.ttl).Unix(),
	}
	s, err := jwt.NewWithClaims(t.jwt.method, claims).SignedString(t.jwt.priv)
	if err != nil {
		return "", fmt.Errorf("sign jwt: %w", err)
	}
	return s, nil
}

// resolve returns the user a token names, extending a simple token's life,
// and, for a simple token, the password hash its user had when it was
// assigned (nil for a JWT).
func (t *Tokens) resolve(token string) (string, []byte, bool) {
	if t.jwt != nil {
		user, ok := t.resolveJWT(token)
		return user, nil, ok
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.simple[token]
	if !ok {
		return "", nil, false
	}
	now := t.now()
	if !now.Before(st.expires) {
		delete(t.simple, token)
		return "", nil, false
	}
	st.expires = now.Add(t.ttl)
	t.simple[token] = st
	return st.user, st.password, true
}

func (t *Tokens) resolveJWT(token string) (string, bool) {
	parsed, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return t.jwt.pub, nil },
		jwt.WithValidMethods([]string{t.jwt.method.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now))
	if err != nil || !parsed.Valid {
		return "", false
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok {
		return "", false
	}
	user, ok := claims["username"].(string)
	return user, ok && user != ""
}

// sweep forgets expired simple tokens.
func (t *Tokens) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for k, st := range t.simple {
		if !now.Before(st.expires) {
			delete(t.simple, k)
		}
	}
}

// Run forgets expired simple tokens until ctx ends. resolve checks expiry
// itself; Run only bounds the memory of abandoned tokens.
func (t *Tokens) Run(ctx context.Context) {
	iv := min(t.ttl, time.Second)
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.sweep()
		}
	}
}
