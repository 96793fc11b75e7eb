package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

// printJSON writes m as protojson: the API's own JSON, stable for scripts.
// Scalars at their zero value are written too, so that a script reads
// "allowed": false rather than a missing key.
func printJSON(w io.Writer, m proto.Message) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		fmt.Fprintf(w, "{\"error\": %q}\n", err.Error())
		return
	}
	fmt.Fprintf(w, "%s\n", b)
}

// table writes rows aligned under a header.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(toAny(header)...)
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() { _ = t.tw.Flush() }

// cell renders a value the way the tenant files spell it.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case *timestamppb.Timestamp:
		if x == nil {
			return "-"
		}
		return x.AsTime().UTC().Format(time.RFC3339)
	case protoreflect.Enum:
		if x.Number() == 0 {
			return "-"
		}
		return tenantfile.EnumName(x.Descriptor(), x.Number())
	case []*commonv1.DataCategory:
		ids := make([]string, len(x))
		for i, c := range x {
			ids[i] = c.GetId()
		}
		return cell(strings.Join(ids, ","))
	case bool:
		if x {
			return "yes"
		}
		return "no"
	}
	return fmt.Sprint(v)
}

// newRequestID is the idempotency key of a one-off command when the
// caller gives none: printed, so a retry can reuse it with --request-id.
func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

// categories turns "a,b" into DataCategory values.
func categories(list string) []*commonv1.DataCategory {
	var out []*commonv1.DataCategory
	for _, id := range splitList(list) {
		out = append(out, &commonv1.DataCategory{Id: id})
	}
	return out
}

func splitList(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// enumFlag reads an enum value spelled as in tenant files.
func enumFlag[E interface {
	protoreflect.Enum
	~int32
}](name, value string) (E, error) {
	var zero E
	num, ok := tenantfile.EnumValue(zero.Descriptor(), value)
	if !ok {
		return zero, fmt.Errorf("--%s %q: one of %s", name, value, strings.Join(tenantfile.EnumNames(zero.Descriptor()), ", "))
	}
	return E(num), nil
}
