package connector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template"
	"time"
)

// tmplData is what a template sees: .Params.<name>, .Identifier, .EventID,
// .Tenant, .RequestTime and, in a poll request, .Extract.<name>. Nothing
// else is reachable, and no template functions are defined.
type tmplData struct {
	Params      map[string]string
	Identifier  string
	EventID     string
	Tenant      string
	RequestTime string
	Extract     map[string]string
}

// sampleValue fills every value when a file is checked at load.
const sampleValue = "sample-value"

func sampleData(params map[string]bool, extract []string) *tmplData {
	d := &tmplData{
		Params: map[string]string{}, Extract: map[string]string{},
		Identifier: sampleValue, EventID: sampleValue, Tenant: sampleValue,
		RequestTime: time.Unix(0, 0).UTC().Format(time.RFC3339),
	}
	for p := range params {
		d.Params[p] = sampleValue
	}
	for _, e := range extract {
		d.Extract[e] = sampleValue
	}
	return d
}

// Escaped views of tmplData: each value prints already escaped for where
// it lands, so that no value (an identifier, a parameter, a value the
// vendor sent back) can change the shape of a URL or a JSON body. The
// escaping is by construction: a template has no way to print a raw value.

type jsonValue string

// String returns the value as a JSON string literal, quotes included.
func (v jsonValue) String() string {
	b, _ := json.Marshal(string(v)) // a string always marshals
	return string(b)
}

type urlValue string

// String returns the value with every byte but the unreserved ones
// (RFC 3986 section 2.3) percent-encoded: safe in a path segment and in a
// query value alike.
func (v urlValue) String() string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

type escapedData[T fmt.Stringer] struct {
	Params      map[string]T
	Identifier  T
	EventID     T
	Tenant      T
	RequestTime T
	Extract     map[string]T
}

func escape[T fmt.Stringer](d *tmplData, f func(string) T) *escapedData[T] {
	e := &escapedData[T]{
		Params: map[string]T{}, Extract: map[string]T{},
		Identifier: f(d.Identifier), EventID: f(d.EventID), Tenant: f(d.Tenant), RequestTime: f(d.RequestTime),
	}
	for k, v := range d.Params {
		e.Params[k] = f(v)
	}
	for k, v := range d.Extract {
		e.Extract[k] = f(v)
	}
	return e
}

// maxRendered bounds what a template may produce.
const maxRendered = 64 << 10

func render(t *template.Template, data any) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&limitWriter{w: &b, n: maxRendered}, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

func renderURL(t *template.Template, d *tmplData) (string, error) {
	return render(t, escape(d, func(s string) urlValue { return urlValue(s) }))
}

func renderBody(t *template.Template, d *tmplData) ([]byte, error) {
	s, err := render(t, escape(d, func(s string) jsonValue { return jsonValue(s) }))
	if err != nil {
		return nil, err
	}
	if !json.Valid([]byte(s)) {
		return nil, errors.New("the body does not render to JSON")
	}
	return []byte(s), nil
}

// plainValue prints as itself; a header value is checked for line breaks
// after rendering instead.
type plainValue string

func (v plainValue) String() string { return string(v) }

func renderHeader(t *template.Template, d *tmplData) (string, error) {
	s, err := render(t, escape(d, func(s string) plainValue { return plainValue(s) }))
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", errors.New("the header value contains a line break")
	}
	return s, nil
}

// limitWriter fails a write past n bytes.
type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, fmt.Errorf("the template renders more than %d bytes", maxRendered)
	}
	l.n -= len(p)
	return l.w.Write(p)
}
