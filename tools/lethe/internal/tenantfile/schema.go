package tenantfile

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
)

// Schema returns the JSON Schema (draft 2020-12) of tenant files, generated
// from the API's descriptors so that it cannot drift from what Parse
// accepts. It describes shapes and value sets; the API's own rules
// (lengths, patterns, references) are checked by Validate and the services.
func Schema() ([]byte, error) {
	defs := map[string]any{}
	ref := func(m protoreflect.Message) map[string]any { return schemaRef(m.Descriptor(), defs) }
	root := map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  "https://lethe.dev/schemas/tenant-file/v1",
		"title":                "Lethe tenant file",
		"description":          "One tenant's privacy set-up, as `lethe apply` takes it. See docs/tenant-files.md.",
		"type":                 "object",
		"additionalProperties": false,
		"required":             []string{"apiVersion", "kind", "tenant"},
		"properties": map[string]any{
			"apiVersion": map[string]any{"const": APIVersion},
			"kind":       map[string]any{"const": Kind},
			"tenant":     ref((&registryv1.Tenant{}).ProtoReflect()),
			"categories": list(ref((&registryv1.Category{}).ProtoReflect()), "The tenant's own data categories, each under an existing parent."),
			"purposes":   list(ref((&consentv1.Purpose{}).ProtoReflect()), "Purposes of processing, with legal basis, eligibility and notice versions (ConsentService.PutPurpose)."),
			"systems":    list(ref((&registryv1.System{}).ProtoReflect()), "Systems, processors, sub-processors and recipients (RegistryService.RegisterSystem)."),
			"activities": list(ref((&registryv1.ProcessingActivity{}).ProtoReflect()), "Records of processing activities, Art. 30 (RegistryService.PutActivity)."),
			"web": func() map[string]any {
				m := ref((&consentv1.WebSettings{}).ProtoReflect())
				m["description"] = "The public consent endpoint for browsers: allowed origins, subject-token keys, banner texts per language (ConsentService.PutWebSettings; docs/web-consent.md)."
				return m
			}(),
			"retention": map[string]any{
				"type":                 "object",
				"additionalProperties": false,
				"properties": map[string]any{
					"rules": list(ref((&retentionv1.Rule{}).ProtoReflect()), "Retention rules: purge rules and minimum-retention rules (RetentionService.PutRule)."),
					"holds": list(ref((&retentionv1.Hold{}).ProtoReflect()), "Legal holds in force (RetentionService.PlaceHold)."),
				},
			},
		},
		"$defs": defs,
	}
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func list(items map[string]any, description string) map[string]any {
	return map[string]any{"type": "array", "description": description, "items": items}
}

// schemaRef returns a reference to the definition of desc, defining it
// (and what it uses) on first sight.
func schemaRef(desc protoreflect.MessageDescriptor, defs map[string]any) map[string]any {
	name := string(desc.FullName())
	ref := map[string]any{"$ref": "#/$defs/" + name}
	if _, done := defs[name]; done {
		return ref
	}
	switch name {
	case dataCategoryName:
		defs[name] = map[string]any{"type": "string", "description": "A dotted data category id (user.contact.email).", "pattern": `^[a-z0-9_]+(\.[a-z0-9_]+)*$`}
		return ref
	case timestampName:
		defs[name] = map[string]any{"type": "string", "description": "A date (2018-05-25, midnight UTC) or an RFC 3339 time.",
			"pattern": `^\d{4}-\d{2}-\d{2}([Tt ][0-9:.]+([Zz]|[+-]\d{2}:\d{2}))?$`}
		return ref
	case durationName:
		defs[name] = map[string]any{"type": "string", "description": "An ISO 8601 duration of exact length: weeks, days and time (P14D, P730D, PT12H).",
			"pattern": `^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$`}
		return ref
	}
	def := map[string]any{"type": "object", "additionalProperties": false}
	defs[name] = def // before the fields, for recursive messages
	props := map[string]any{}
	for i := 0; i < desc.Fields().Len(); i++ {
		fd := desc.Fields().Get(i)
		if _, ok := outputOnly[fd.FullName()]; ok {
			continue
		}
		var s map[string]any
		switch fd.Kind() {
		case protoreflect.MessageKind:
			if fd.IsMap() {
				break // the map's own schema below
			}
			s = schemaRef(fd.Message(), defs)
		case protoreflect.EnumKind:
			s = map[string]any{"enum": EnumNames(fd.Enum()), "description": fmt.Sprintf("%s (also accepted: the full value name)", fd.Enum().FullName())}
		case protoreflect.BoolKind:
			s = map[string]any{"type": "boolean"}
		case protoreflect.StringKind:
			s = map[string]any{"type": "string"}
		case protoreflect.DoubleKind, protoreflect.FloatKind:
			s = map[string]any{"type": "number"}
		default:
			s = map[string]any{"type": "integer"}
		}
		switch {
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.MessageKind:
			s = map[string]any{"type": "object", "additionalProperties": schemaRef(fd.MapValue().Message(), defs)}
		case fd.IsMap():
			s = map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}}
		case fd.IsList():
			s = map[string]any{"type": "array", "items": s}
		}
		props[fd.JSONName()] = s
	}
	def["properties"] = props
	return ref
}
