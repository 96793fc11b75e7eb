package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/lethe-privacy/lethe/gen/go/descriptorset"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
)

const committed = "../../docs/openapi.json"

// The committed document is what the generator writes from the committed
// descriptors (make check-generate checks the same from a clean copy).
func TestCommittedDocumentIsGenerated(t *testing.T) {
	want, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the protos: run 'make generate' and commit", committed)
	}
}

// load reads the committed document with kin-openapi and validates it as
// OpenAPI 3.1.
func load(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the document is not valid OpenAPI: %v", err)
	}
	return doc
}

// Every unary RPC of every service has its path, and each path's request
// and response schemas accept what the HTTP listener exchanges: protojson
// with every field written (the transcoder's codec), here for the empty
// message of each, and for a filled request with timestamps, enums, lists
// and nested messages.
func TestDocumentDescribesEveryUnaryRPCAsProtojson(t *testing.T) {
	doc := load(t)
	files, err := descriptorset.Files()
	if err != nil {
		t.Fatal(err)
	}
	marshal := protojson.MarshalOptions{EmitUnpopulated: true}
	unary := 0
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				path := "/" + string(sd.FullName()) + "/" + string(md.Name())
				item := doc.Paths.Find(path)
				if md.IsStreamingClient() || md.IsStreamingServer() {
					if item != nil {
						t.Errorf("%s streams, which plain HTTP/JSON cannot, but has a path", path)
					}
					continue
				}
				unary++
				if item == nil || item.Post == nil {
					t.Errorf("no POST %s", path)
					continue
				}
				op := item.Post
				for _, m := range []struct {
					desc   protoreflect.MessageDescriptor
					schema *openapi3.SchemaRef
				}{
					{md.Input(), op.RequestBody.Value.Content.Get("application/json").Schema},
					{md.Output(), op.Responses.Status(200).Value.Content.Get("application/json").Schema},
				} {
					mt, err := protoregistry.GlobalTypes.FindMessageByName(m.desc.FullName())
					if err != nil {
						t.Fatal(err)
					}
					validate(t, path, m.schema, marshal, mt.New().Interface())
				}
			}
		}
		return true
	})
	if unary < 40 {
		t.Fatalf("%d unary RPCs described; the four services have more", unary)
	}

	filled := &registryv1.RegisterSystemRequest{}
	if err := protojson.Unmarshal([]byte(`{"request_id":"s1","tenant_id":"clicklearn","system":{"system_id":"google-analytics","name":"Google Analytics",
		"kind":"SYSTEM_KIND_PROCESSOR","country":"US","categories":[{"id":"user.behavior"},{"id":"user.contact.email"}],
		"answer_mode":"ANSWER_MODE_MANUAL","dpa_signed_at":"2018-05-25T00:00:00Z",
		"transfer":{"mechanism":"TRANSFER_MECHANISM_EU_US_PRIVACY_SHIELD"}}}`), filled); err != nil {
		t.Fatal(err)
	}
	path := "/lethe.registry.v1.RegistryService/RegisterSystem"
	validate(t, path, doc.Paths.Find(path).Post.RequestBody.Value.Content.Get("application/json").Schema, marshal, filled)
	validate(t, path, doc.Paths.Find(path).Post.RequestBody.Value.Content.Get("application/json").Schema, protojson.MarshalOptions{}, filled)

	// A misspelt enum is refused: the schemas constrain, not only describe.
	var wrong any
	if err := json.Unmarshal([]byte(`{"system": {"kind": "SYSTEM_KIND_SPACESHIP"}}`), &wrong); err != nil {
		t.Fatal(err)
	}
	if err := doc.Paths.Find(path).Post.RequestBody.Value.Content.Get("application/json").Schema.Value.VisitJSON(wrong, openapi3.EnableJSONSchema2020()); err == nil {
		t.Fatal("the RegisterSystem schema accepts an enum value the proto does not declare")
	}
}

// validate checks that msg, as opts writes it, is valid against schema.
func validate(t *testing.T, what string, schema *openapi3.SchemaRef, opts protojson.MarshalOptions, msg proto.Message) {
	t.Helper()
	data, err := opts.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var value any
	if err := json.Unmarshal(data, &value); err != nil {
		t.Fatal(err)
	}
	if err := schema.Value.VisitJSON(value, openapi3.EnableJSONSchema2020()); err != nil {
		t.Errorf("%s: %s %s does not match its schema: %v", what, msg.ProtoReflect().Descriptor().FullName(), data, err)
	}
}
