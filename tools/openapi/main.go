// Command openapi writes the OpenAPI 3.1 document of Lethe's HTTP/JSON API
// (docs/openapi.json) from the protos' descriptors with their comments
// (gen/go/descriptorset). `make generate` runs it and `make
// check-generate` fails when the committed document differs.
//
// The HTTP/JSON API is the gRPC API in the Connect protocol's unary form
// (docs/design.md § HTTP/JSON): one path per unary RPC,
// POST /<package>.<Service>/<Method> with the request message as JSON and
// the response message as JSON, field names as protojson writes them
// (lowerCamelCase; the proto names are accepted too). Streaming RPCs have
// no JSON form over plain HTTP and are left out.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/lethe-privacy/lethe/gen/go/descriptorset"
	// The imports the descriptor set leaves out (well-known types,
	// protovalidate's rules) are resolved from the registered files.
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
)

func main() {
	out := flag.String("o", "", "file to write (standard output when empty)")
	flag.Parse()
	doc, err := Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		os.Exit(1)
	}
	if *out == "" {
		_, _ = os.Stdout.Write(doc)
		return
	}
	if err := os.WriteFile(*out, doc, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		os.Exit(1)
	}
}

// errorSchema is the Connect protocol's error body: the gRPC code, its
// message, and the status details, each with its JSON form in debug.
const errorSchema = "connect.Error"

// Generate returns the document, indented JSON ending in a newline. It is
// deterministic: the same descriptors give the same bytes.
func Generate() ([]byte, error) {
	files, err := descriptorset.Files()
	if err != nil {
		return nil, err
	}
	g := &generator{schemas: map[string]any{}}
	paths := map[string]any{}
	var services []protoreflect.ServiceDescriptor
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			services = append(services, fd.Services().Get(i))
		}
		return true
	})
	// RangeFiles visits the files in no fixed order.
	slices.SortFunc(services, func(a, b protoreflect.ServiceDescriptor) int {
		return strings.Compare(string(a.FullName()), string(b.FullName()))
	})
	if len(services) == 0 {
		return nil, errors.New("the descriptor set declares no service")
	}
	var tags []any
	for _, sd := range services {
		tags = append(tags, map[string]any{"name": string(sd.FullName()), "description": comment(sd)})
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				continue
			}
			paths["/"+string(sd.FullName())+"/"+string(md.Name())] = map[string]any{"post": g.operation(md)}
		}
	}
	g.schemas[errorSchema] = map[string]any{
		"type":        "object",
		"description": "An error, as the Connect protocol writes it: the gRPC status code in lower snake case, its message, and the status details. A mistake in the request is invalid_argument (HTTP 400) with a google.rpc.BadRequest detail naming each field at fault; google.rpc.ErrorInfo carries the reason and, for not_found, the kind and id of what is missing.",
		"required":    []string{"code"},
		"properties": map[string]any{
			"code": map[string]any{"type": "string", "enum": []string{"canceled", "unknown", "invalid_argument", "deadline_exceeded",
				"not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted",
				"out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"}},
			"message": map[string]any{"type": "string"},
			"details": map[string]any{"type": "array", "items": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"type":  map[string]any{"type": "string", "description": "The detail's message type, e.g. google.rpc.BadRequest."},
					"value": map[string]any{"type": "string", "contentEncoding": "base64", "description": "The detail in protobuf binary."},
					"debug": map[string]any{"type": "object", "description": "The detail as JSON."},
				},
			}},
		},
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "Lethe",
			"version": "v1",
			"description": "Lethe's API over HTTP/JSON, generated from the protos (proto/lethe). Each RPC is " +
				"POST /<package>.<Service>/<Method> with Content-Type: application/json: the Connect protocol's unary form, " +
				"served by the same gRPC handlers, authentication, authorization policy and validation as gRPC. " +
				"Methods free of side effects also answer the Connect protocol's GET form. " +
				"Field names are protojson's (lowerCamelCase; proto names are accepted), 64-bit integers are strings, " +
				"timestamps are RFC 3339, enums are their names.",
		},
		"tags":  tags,
		"paths": paths,
		"components": map[string]any{
			"schemas": g.schemas,
			"securitySchemes": map[string]any{
				"bearer":    map[string]any{"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A JWT from the deployment's identity provider (--jwt-keys, --jwt-issuer, --jwt-audience)."},
				"mutualTLS": map[string]any{"type": "mutualTLS", "description": "A client certificate with a SPIFFE id in the deployment's trust domain."},
			},
		},
		"security": []any{map[string]any{"bearer": []string{}}, map[string]any{"mutualTLS": []string{}}},
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

type generator struct {
	schemas map[string]any
}

func (g *generator) operation(md protoreflect.MethodDescriptor) map[string]any {
	desc := comment(md)
	if opts, ok := md.Options().(*descriptorpb.MethodOptions); ok && opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS {
		desc += "\n\nFree of side effects: also answers GET ?connect=v1&encoding=json&message=<the request as JSON>."
	}
	return map[string]any{
		"operationId": string(md.FullName()),
		"tags":        []string{string(md.Parent().FullName())},
		"summary":     firstSentence(desc),
		"description": desc,
		"requestBody": map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": map[string]any{"schema": g.ref(md.Input())}},
		},
		"responses": map[string]any{
			"200": map[string]any{
				"description": "The response.",
				"content":     map[string]any{"application/json": map[string]any{"schema": g.ref(md.Output())}},
			},
			"default": map[string]any{
				"description": "An error; the HTTP status follows from the code as the Connect protocol maps it: invalid_argument, failed_precondition and out_of_range 400, unauthenticated 401, permission_denied 403, not_found 404, already_exists and aborted 409, resource_exhausted 429, unknown, internal and data_loss 500, unimplemented 501, unavailable 503, deadline_exceeded 504. Tell the 400s apart by code.",
				"content":     map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + errorSchema}}},
			},
		},
	}
}

// ref returns a reference to the schema of md, adding the schema (and
// those it refers to) to the components once.
func (g *generator) ref(md protoreflect.MessageDescriptor) map[string]any {
	if wkt := wellKnown(md); wkt != nil {
		return wkt
	}
	name := string(md.FullName())
	if _, ok := g.schemas[name]; !ok {
		g.schemas[name] = nil // placeholder: a recursive message refers to itself
		g.schemas[name] = g.message(md)
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

func (g *generator) message(md protoreflect.MessageDescriptor) map[string]any {
	props := map[string]any{}
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		s := g.field(fd)
		if c := comment(fd); c != "" {
			s = withDescription(s, c)
		}
		props[fd.JSONName()] = s
	}
	s := map[string]any{"type": "object", "properties": props}
	if c := comment(md); c != "" {
		s["description"] = c
	}
	return s
}

func (g *generator) field(fd protoreflect.FieldDescriptor) map[string]any {
	switch {
	case fd.IsMap():
		return map[string]any{"type": "object", "additionalProperties": g.single(fd.MapValue())}
	case fd.IsList():
		return map[string]any{"type": "array", "items": g.single(fd)}
	}
	return g.single(fd)
}

// single is the schema of one value of fd, as protojson writes it.
func (g *generator) single(fd protoreflect.FieldDescriptor) map[string]any {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BytesKind:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return map[string]any{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		// protojson writes 64-bit integers as strings and reads either.
		return map[string]any{"type": []string{"string", "integer"}, "format": "int64"}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return map[string]any{"type": "number"}
	case protoreflect.EnumKind:
		return g.enum(fd.Enum())
	default: // message, group
		// protojson writes an unset message field as null when it writes
		// unpopulated fields, as the HTTP listener does; a list's or map's
		// entries are never null.
		if fd.IsList() || fd.ContainingMessage().IsMapEntry() {
			return g.ref(fd.Message())
		}
		return map[string]any{"anyOf": []any{g.ref(fd.Message()), map[string]any{"type": "null"}}}
	}
}

func (g *generator) enum(ed protoreflect.EnumDescriptor) map[string]any {
	name := string(ed.FullName())
	if ed.FullName() == "google.protobuf.NullValue" {
		return map[string]any{"type": "null"}
	}
	if _, ok := g.schemas[name]; !ok {
		var values []string
		var lines []string
		for i := range ed.Values().Len() {
			v := ed.Values().Get(i)
			values = append(values, string(v.Name()))
			if c := comment(v); c != "" {
				lines = append(lines, "- "+string(v.Name())+": "+strings.ReplaceAll(c, "\n", " "))
			}
		}
		s := map[string]any{"type": "string", "enum": values}
		desc := comment(ed)
		if len(lines) > 0 {
			desc = strings.TrimSpace(desc + "\n\n" + strings.Join(lines, "\n"))
		}
		if desc != "" {
			s["description"] = desc
		}
		g.schemas[name] = s
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// wellKnown is the protojson form of a well-known type, nil for any other
// message.
func wellKnown(md protoreflect.MessageDescriptor) map[string]any {
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return map[string]any{"type": "string", "format": "date-time"}
	case "google.protobuf.Duration":
		return map[string]any{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]{1,9})?s$`}
	case "google.protobuf.FieldMask":
		return map[string]any{"type": "string"}
	case "google.protobuf.Struct":
		return map[string]any{"type": "object"}
	case "google.protobuf.Value":
		return map[string]any{}
	case "google.protobuf.ListValue":
		return map[string]any{"type": "array"}
	case "google.protobuf.Empty":
		return map[string]any{"type": "object"}
	case "google.protobuf.Any":
		return map[string]any{"type": "object", "required": []string{"@type"}, "properties": map[string]any{"@type": map[string]any{"type": "string"}}}
	case "google.protobuf.StringValue":
		return map[string]any{"type": "string"}
	case "google.protobuf.BytesValue":
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	case "google.protobuf.BoolValue":
		return map[string]any{"type": "boolean"}
	case "google.protobuf.Int32Value", "google.protobuf.UInt32Value":
		return map[string]any{"type": "integer"}
	case "google.protobuf.Int64Value", "google.protobuf.UInt64Value":
		return map[string]any{"type": []string{"string", "integer"}, "format": "int64"}
	case "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return map[string]any{"type": "number"}
	}
	return nil
}

// withDescription adds a description to s; beside a $ref, OpenAPI 3.1
// lets it override the referenced schema's.
func withDescription(s map[string]any, desc string) map[string]any {
	out := make(map[string]any, len(s)+1)
	for k, v := range s {
		out[k] = v
	}
	out["description"] = desc
	return out
}

// comment is d's leading comment in the proto, without the comment
// markers' indentation; the descriptor set keeps the comments.
func comment(d protoreflect.Descriptor) string {
	loc := d.ParentFile().SourceLocations().ByDescriptor(d)
	lines := strings.Split(strings.TrimRight(loc.LeadingComments, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, " ")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// firstSentence is desc up to its first full stop, for an operation's
// summary.
func firstSentence(desc string) string {
	line := strings.ReplaceAll(desc, "\n", " ")
	if i := strings.Index(line, ". "); i >= 0 {
		return line[:i+1]
	}
	return strings.TrimSpace(line)
}
