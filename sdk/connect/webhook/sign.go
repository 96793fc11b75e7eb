package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The Standard Webhooks headers (standardwebhooks.com, specification
// 1.0.0): the message id, which repeats on every delivery of the same
// event so that a receiver can de-duplicate; the time of this attempt in
// Unix seconds, which the receiver checks against its clock to refuse
// replays; and the signatures, space-separated "v1,<base64>", one per
// secret in force.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts a Standard Webhooks secret; the rest is the key in
// standard base64.
const SecretPrefix = "whsec_"

// The secret files in <secrets-dir>/<tenant>/<system>/: the current
// secret, and during a rotation the previous one, with which every request
// is signed as well until the receiver has the new one.
const (
	SecretFile         = "signing-secret"
	PreviousSecretFile = "signing-secret.previous"
)

// Sign returns the webhook-signature header for a message: "v1,<base64
// HMAC-SHA256 of id.timestamp.body>" for each key, space-separated, in the
// order given.
func Sign(keys [][]byte, id string, timestamp time.Time, body []byte) string {
	sigs := make([]string, len(keys))
	for i, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(strconv.FormatInt(timestamp.Unix(), 10)))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	return strings.Join(sigs, " ")
}

// ParseSecret reads a "whsec_<base64>" secret. The specification asks for
// a key of 24 to 64 bytes; shorter ones are refused.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("a signing secret starts with %q", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("a signing secret is whsec_ followed by standard base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("a signing secret's key has 24 to 64 bytes, this one %d", len(key))
	}
	return key, nil
}

// secrets reads a system's secret files and reads them again when they
// change, so that a rotation (write the new secret, move the old one to
// .previous) needs no restart.
type secrets struct {
	dir string

	mu    sync.Mutex
	stamp string // size and modification time of both files when read
	keys  [][]byte
}

// current returns the keys to sign with, current first. A missing or
// malformed current secret is an error: nothing is sent unsigned.
func (s *secrets) current() ([][]byte, error) {
	cur := filepath.Join(s.dir, SecretFile)
	prev := filepath.Join(s.dir, PreviousSecretFile)
	stamp, err := fileStamp(cur)
	if err != nil {
		return nil, fmt.Errorf("webhook signing secret: %w", err)
	}
	prevStamp, prevErr := fileStamp(prev)
	if prevErr != nil && !errors.Is(prevErr, os.ErrNotExist) {
		return nil, fmt.Errorf("webhook previous signing secret: %w", prevErr)
	}
	stamp += "|" + prevStamp
	s.mu.Lock()
	defer s.mu.Unlock()
	if stamp == s.stamp {
		return s.keys, nil
	}
	var keys [][]byte
	for _, path := range []string{cur, prev} {
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) && path == prev {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("webhook signing secret: %w", err)
		}
		key, err := ParseSecret(string(data))
		if err != nil {
			return nil, fmt.Errorf("webhook signing secret %s: %w", filepath.Base(path), err)
		}
		if len(keys) == 1 && bytes.Equal(keys[0], key) {
			continue // a rotation not yet begun: sign once
		}
		keys = append(keys, key)
	}
	s.stamp, s.keys = stamp, keys
	return keys, nil
}

// fileStamp identifies a version of a file by size and modification time.
func fileStamp(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano()), nil
}

// Tolerance is how far a signed message's webhook-timestamp may be from
// the verifier's clock, either way, as the specification recommends: an
// older message is refused as a replay.
const Tolerance = 5 * time.Minute

// Verify checks a Standard Webhooks signature as a receiver does: that
// timestamp (Unix seconds) is within Tolerance of now and that one of the
// "v1,<base64>" signatures in signatures is the HMAC-SHA256 of
// id.timestamp.body under one of keys, compared in constant time.
func Verify(keys [][]byte, id, timestamp, signatures string, body []byte, now time.Time) error {
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not Unix seconds")
	}
	ts := time.Unix(secs, 0)
	if d := now.Sub(ts); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("webhook-timestamp is %s from now, more than %s: refused as a replay", d.Round(time.Second), Tolerance)
	}
	want := strings.Fields(Sign(keys, id, ts, body))
	for _, sig := range strings.Fields(signatures) {
		for _, w := range want {
			if hmac.Equal([]byte(sig), []byte(w)) {
				return nil
			}
		}
	}
	return errors.New("no webhook-signature verifies with the system's signing secret")
}
