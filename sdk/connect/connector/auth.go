package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// maxSecretBytes bounds a secret file.
const maxSecretBytes = 16 << 10

// readSecret reads the secret file name from dir, trimmed of surrounding
// white space (an editor's final newline). It is read at every use, so a
// rotated token or key takes effect without a restart.
func readSecret(dir, name string) (string, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	if len(b) > maxSecretBytes {
		return "", fmt.Errorf("secret %q is larger than %d bytes", name, maxSecretBytes)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret %q is empty", name)
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", fmt.Errorf("secret %q spans several lines", name)
	}
	return s, nil
}

// authorizer sets a request's credentials.
type authorizer struct {
	spec   authSpec
	dir    string
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// tokenMargin renews an OAuth2 token this long before it expires, so that
// a request does not leave with a token that lapses on the way.
const tokenMargin = 30 * time.Second

// apply sets the Authorization header of req.
func (a *authorizer) apply(ctx context.Context, req *http.Request) error {
	switch a.spec.Type {
	case "bearer":
		tok, err := readSecret(a.dir, a.spec.TokenFile)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case "basic":
		user, err := readSecret(a.dir, a.spec.UsernameFile)
		if err != nil {
			return err
		}
		var pass string
		if a.spec.PasswordFile != "" {
			if pass, err = readSecret(a.dir, a.spec.PasswordFile); err != nil {
				return err
			}
		}
		req.SetBasicAuth(user, pass)
	case "oauth2_client_credentials":
		tok, err := a.oauth2Token(ctx)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// forget drops a cached OAuth2 token the vendor refused, so that the next
// request fetches a new one.
func (a *authorizer) forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.token = ""
}

// oauth2Token returns a cached access token, fetching a new one from the
// token endpoint (RFC 6749 section 4.4, client credentials in the form
// body as section 2.3.1 permits) when there is none or it is about to
// expire.
func (a *authorizer) oauth2Token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && a.now().Add(tokenMargin).Before(a.expires) {
		return a.token, nil
	}
	id, err := readSecret(a.dir, a.spec.ClientIDFile)
	if err != nil {
		return "", err
	}
	secret, err := readSecret(a.dir, a.spec.ClientSecretFile)
	if err != nil {
		return "", err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	if len(a.spec.Scopes) > 0 {
		form.Set("scope", strings.Join(a.spec.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.spec.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return "", fmt.Errorf("token endpoint: %w", err)
	}
	var tr struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.Number     `json:"expires_in"`
		Error       string          `json:"error"`
		Description json.RawMessage `json:"error_description"`
	}
	_ = json.Unmarshal(body, &tr) // a non-JSON answer leaves tr empty
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint answered HTTP %d %s", resp.StatusCode, bounded(tr.Error))
	}
	if tr.AccessToken == "" || strings.ContainsAny(tr.AccessToken, "\r\n") {
		return "", errors.New("token endpoint answered without an access token")
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return "", fmt.Errorf("token endpoint answered a %s token, not a bearer token", bounded(tr.TokenType))
	}
	// Without expires_in (RFC 6749 makes it optional) the token is used
	// for a minute only.
	life := time.Minute
	if n, err := tr.ExpiresIn.Int64(); err == nil && n > 0 {
		life = time.Duration(min(n, 86400)) * time.Second
	}
	a.token, a.expires = tr.AccessToken, a.now().Add(life)
	return a.token, nil
}
