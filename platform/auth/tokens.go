package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/lethe-privacy/lethe/platform/internal/livefile"
)

// TokenAuthenticator identifies callers by static bearer tokens listed in a
// file. It is for the development profile only — a static token never
// expires and is shared by whoever has the file — and the production
// profile refuses it. The file is JSON:
//
//	{"tokens": [{"name": "alice", "token": "a long random string"}]}
//
// A caller presenting alice's token is "token:alice". Tokens are 16
// characters or more. The file is reloaded when it changes.
type TokenAuthenticator struct {
	tokens *livefile.File[[]staticToken]
}

type staticToken struct {
	name string
	sum  [sha256.Size]byte
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,128}$`)

// minTokenLength keeps guessable tokens out even in development.
const minTokenLength = 16

// LoadTokens reads a static tokens file.
func LoadTokens(path string, logger *slog.Logger) (*TokenAuthenticator, error) {
	f, err := livefile.Load([]string{path}, func(c [][]byte) ([]staticToken, error) {
		return parseTokens(c[0])
	}, livefile.Options{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("static tokens: %w", err)
	}
	return &TokenAuthenticator{tokens: f}, nil
}

func parseTokens(data []byte) ([]staticToken, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var file struct {
		Tokens []struct {
			Name  string `json:"name"`
			Token string `json:"token"`
		} `json:"tokens"`
	}
	if err := dec.Decode(&file); err != nil {
		return nil, err
	}
	var errs []error
	tokens := make([]staticToken, 0, len(file.Tokens))
	for i, t := range file.Tokens {
		if !tokenName.MatchString(t.Name) {
			errs = append(errs, fmt.Errorf("tokens[%d]: name %q is not 1-128 letters, digits or ._@-", i, t.Name))
		}
		if len(t.Token) < minTokenLength {
			errs = append(errs, fmt.Errorf("tokens[%d] (%s): the token is shorter than %d characters", i, t.Name, minTokenLength))
		}
		tokens = append(tokens, staticToken{name: t.Name, sum: sha256.Sum256([]byte(t.Token))})
	}
	return tokens, errors.Join(errs...)
}

func (*TokenAuthenticator) readsBearerToken() {}

// Authenticate implements Authenticator. A token that is not in the file
// is no credential of this authenticator's, so that a Chain may pass it to
// the JWT authenticator.
func (a *TokenAuthenticator) Authenticate(ctx context.Context) (Identity, error) {
	token, ok, err := bearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{}, ErrNoCredentials
	}
	// Compare digests in constant time, against every entry, so that the
	// time taken says nothing about how much of a token was right.
	sum := sha256.Sum256([]byte(token))
	name := ""
	for _, t := range a.tokens.Get() {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			name = t.name
		}
	}
	if name == "" {
		return Identity{}, ErrNoCredentials
	}
	return Identity{Name: "token:" + name}, nil
}
