// Package paging makes every list RPC of Lethe page the same way, so that
// a client (and `lethe export`, which lists a tenant's whole configuration)
// can walk any listing with one loop: ask with page_size and the last
// response's next_page_token until the token comes back empty.
//
// A page token is opaque to clients. It carries the last key returned and a
// fingerprint of the query it belongs to, so a token replayed against
// another query (another tenant, another filter) is rejected with
// InvalidArgument instead of silently skipping or leaking rows.
package paging

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

const (
	// DefaultPageSize is used when a request gives none.
	DefaultPageSize = 100
	// MaxPageSize bounds one page, so that one call's work and response
	// stay bounded whatever the client asks.
	MaxPageSize = 1000
)

// Request is a list request: protoc-gen-go generates these getters for
// page_size and page_token fields.
type Request interface {
	GetPageSize() int32
	GetPageToken() string
}

// Page is one page of a prefix scan.
type Page struct {
	Keys, Values [][]byte
	// NextToken resumes after the last key; empty on the last page.
	NextToken string
}

// Scan returns the next page of the keys under prefix in bucket b, in key
// order. query names the listing (for example tenant and filter values): a
// token is accepted only for the query it was issued for.
func Scan(b *bolt.Bucket, prefix []byte, req Request, query ...string) (Page, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return Page{}, err
	}
	fp := fingerprint(prefix, query)
	c := b.Cursor()
	k, v := c.Seek(prefix)
	if tok := req.GetPageToken(); tok != "" {
		after, err := decodeToken(tok, fp)
		if err != nil {
			return Page{}, err
		}
		if !bytes.HasPrefix(after, prefix) {
			return Page{}, invalidToken()
		}
		k, v = c.Seek(after)
		if k != nil && bytes.Equal(k, after) {
			k, v = c.Next()
		}
	}
	var p Page
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(p.Keys) == size {
			p.NextToken = encodeToken(p.Keys[len(p.Keys)-1], fp)
			break
		}
		p.Keys = append(p.Keys, append([]byte(nil), k...))
		p.Values = append(p.Values, append([]byte(nil), v...))
	}
	return p, nil
}

// Slice pages a listing computed in memory: keys must be sorted and unique.
// It returns the bounds of the page within keys and the token of the next.
// Tokens are interchangeable with Scan's for the same query.
func Slice(keys []string, req Request, query ...string) (start, end int, next string, err error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return 0, 0, "", err
	}
	fp := fingerprint(nil, query)
	if tok := req.GetPageToken(); tok != "" {
		after, err := decodeToken(tok, fp)
		if err != nil {
			return 0, 0, "", err
		}
		// The first key after the token's, wherever the listing has moved.
		start = sort.SearchStrings(keys, string(after))
		if start < len(keys) && keys[start] == string(after) {
			start++
		}
	}
	end = min(start+size, len(keys))
	if end < len(keys) {
		next = encodeToken([]byte(keys[end-1]), fp)
	}
	return start, end, next, nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, apierror.Invalid("page_size", "must not be negative")
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(n), nil
}

// tokenVersion versions the token layout: version | fingerprint(8) | key.
const tokenVersion = 1

func fingerprint(prefix []byte, query []string) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d:%x", len(prefix), prefix)
	for _, q := range query {
		fmt.Fprintf(h, "|%d:%s", len(q), q)
	}
	return h.Sum(nil)[:8]
}

func encodeToken(lastKey, fp []byte) string {
	b := make([]byte, 0, 1+len(fp)+len(lastKey))
	b = append(append(append(b, tokenVersion), fp...), lastKey...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(tok string, fp []byte) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 1+len(fp) || b[0] != tokenVersion || !bytes.Equal(b[1:1+len(fp)], fp) {
		return nil, invalidToken()
	}
	return b[1+len(fp):], nil
}

func invalidToken() error {
	return apierror.Invalid("page_token", "not a token this listing issued; start again without a token")
}
