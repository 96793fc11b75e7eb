// Package taxonomy is the data-category taxonomy: the dotted hierarchy of
// personal-data categories ("user.contact.email" under "user.contact" under
// "user") that systems declare they hold and that events name.
//
// The built-in categories are data, not code: builtin.json, modelled on the
// Fideslang data-category taxonomy, is embedded and parsed once. A tenant
// extends the taxonomy with categories of its own under existing ones; a
// Taxonomy is the built-in categories plus one tenant's extensions.
//
// Categories nest by whole dot-separated segments, and sensitivity (GDPR
// Art. 9 special categories) is inherited: everything under a sensitive
// category is sensitive, so a tenant cannot define its way out of Art. 9 by
// adding a sub-category.
package taxonomy

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// MaxIDLen is the longest category id, in bytes, as the proto allows.
const MaxIDLen = contract.MaxCategoryLen

// Limits on a category's text, in characters, matching the proto.
const (
	maxNameLen        = 200
	maxDescriptionLen = 1000
)

// Category is a node of the taxonomy.
type Category struct {
	// ID is the dotted id; its parent is the id without the last segment.
	ID string
	// Name is the human-readable name.
	Name string
	// Description says what the category covers.
	Description string
	// Sensitive marks a special category of personal data (GDPR Art. 9),
	// set on every category under a sensitive one.
	Sensitive bool
	// BuiltIn is true for Lethe's own categories, false for a tenant's.
	BuiltIn bool
	// Provenance is where data of the category comes from, as stated or
	// inherited from the nearest ancestor that states one; unspecified
	// when none does. It decides what a portable copy holds (Art. 20(1)).
	Provenance registryv1.DataProvenance
}

// ValidID reports whether id is well formed: one or more segments of
// lower-case letters, digits and underscores, joined by single dots, at
// most MaxIDLen bytes in all. It says nothing about whether the category
// exists.
func ValidID(id string) bool { return contract.ValidCategory(id) }

// Parent returns the id of the category directly above id, or "" when id
// is a root. It does not validate id.
func Parent(id string) string { return contract.CategoryParent(id) }

// Covers reports whether a equals b or is an ancestor of b by whole
// segments: "user.contact" covers "user.contact.email" but not
// "user.contacts". It does not validate either id.
func Covers(a, b string) bool { return contract.CategoryCovers(a, b) }

// Related reports whether either of a and b covers the other: data about
// one is data about the other, so a system holding either must answer an
// event about the other.
func Related(a, b string) bool {
	return Covers(a, b) || Covers(b, a)
}

//go:embed builtin.json
var builtinJSON []byte

// builtin holds the parsed built-in categories, sorted by id. A malformed
// file is a build defect, caught by the package's tests, so failing at
// start-up rather than serving a partial taxonomy is right.
var builtin = mustParseBuiltin(builtinJSON)

// builtinByID indexes builtin.
var builtinByID = index(builtin)

// Builtin returns the built-in categories, sorted by id. The slice is the
// caller's own.
func Builtin() []Category {
	return slices.Clone(builtin)
}

func mustParseBuiltin(data []byte) []Category {
	cats, err := parseBuiltin(data)
	if err != nil {
		panic("taxonomy: builtin.json: " + err.Error())
	}
	return cats
}

// builtinEntry is one category as written in builtin.json. Only the roots
// of sensitive subtrees say so; their descendants inherit it on load.
// Provenance, one of provenanceNames, is inherited likewise unless a
// descendant states its own.
type builtinEntry struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Sensitive   bool   `json:"sensitive"`
	Provenance  string `json:"provenance"`
}

// provenanceNames are the provenances builtin.json may state.
var provenanceNames = map[string]registryv1.DataProvenance{
	"":            registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED,
	"provided":    registryv1.DataProvenance_DATA_PROVENANCE_PROVIDED,
	"observed":    registryv1.DataProvenance_DATA_PROVENANCE_OBSERVED,
	"inferred":    registryv1.DataProvenance_DATA_PROVENANCE_INFERRED,
	"derived":     registryv1.DataProvenance_DATA_PROVENANCE_DERIVED,
	"third_party": registryv1.DataProvenance_DATA_PROVENANCE_THIRD_PARTY,
}

// inherit is a category's provenance: its own when it states one, its
// parent's otherwise.
func inherit(own, parent registryv1.DataProvenance) registryv1.DataProvenance {
	if own != registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED {
		return own
	}
	return parent
}

// parseBuiltin parses and checks the built-in taxonomy: every id valid and
// unique, every parent present, every category named and described.
func parseBuiltin(data []byte) ([]Category, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a misspelt "sensitve" must not pass silently
	var entries []builtinEntry
	if err := dec.Decode(&entries); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the category list")
	}
	cats := make([]Category, len(entries))
	for i, e := range entries {
		p, ok := provenanceNames[e.Provenance]
		if !ok {
			return nil, fmt.Errorf("category %q: unknown provenance %q", e.ID, e.Provenance)
		}
		cats[i] = Category{ID: e.ID, Name: e.Name, Description: e.Description, Sensitive: e.Sensitive, BuiltIn: true, Provenance: p}
	}
	// A parent's id is a proper prefix of its children's, so in id order
	// every parent comes before its children and one pass can check
	// parents and pass sensitivity down.
	slices.SortFunc(cats, func(a, b Category) int { return strings.Compare(a.ID, b.ID) })
	byID := make(map[string]int, len(cats))
	for i := range cats {
		c := &cats[i]
		if !ValidID(c.ID) {
			return nil, fmt.Errorf("category %q: invalid id", c.ID)
		}
		if _, dup := byID[c.ID]; dup {
			return nil, fmt.Errorf("category %q: defined twice", c.ID)
		}
		if c.Name == "" || c.Description == "" {
			return nil, fmt.Errorf("category %q: name and description are required", c.ID)
		}
		if utf8.RuneCountInString(c.Name) > maxNameLen || utf8.RuneCountInString(c.Description) > maxDescriptionLen {
			return nil, fmt.Errorf("category %q: name or description too long", c.ID)
		}
		if p := Parent(c.ID); p != "" {
			pi, ok := byID[p]
			if !ok {
				return nil, fmt.Errorf("category %q: parent %q does not exist", c.ID, p)
			}
			c.Sensitive = c.Sensitive || cats[pi].Sensitive
			c.Provenance = inherit(c.Provenance, cats[pi].Provenance)
		}
		byID[c.ID] = i
	}
	return cats, nil
}

func index(cats []Category) map[string]Category {
	m := make(map[string]Category, len(cats))
	for _, c := range cats {
		m[c.ID] = c
	}
	return m
}

// ErrAlreadyDefined is wrapped by the FieldError reporting that an
// extension's id is taken, so a caller can answer AlreadyExists rather than
// InvalidArgument.
var ErrAlreadyDefined = errors.New("category already defined")

// FieldError says which field of a category is wrong. Field is a path
// relative to a DefineCategoryRequest ("category.id", "category.name") and
// Description reads well after it, so the gRPC layer can pass both on as a
// BadRequest field violation.
type FieldError struct {
	Field       string
	Description string
	// err is a sentinel the error wraps, when there is one.
	err error
}

// Error returns "field: description".
func (e *FieldError) Error() string { return e.Field + ": " + e.Description }

// Unwrap returns the sentinel the error stands for, if any.
func (e *FieldError) Unwrap() error { return e.err }

// Taxonomy is the taxonomy one tenant sees: the built-in categories plus
// the tenant's extensions. It is immutable, and safe for concurrent use.
type Taxonomy struct {
	// extensions holds the tenant's own categories; the built-in ones are
	// shared by every Taxonomy rather than copied into each.
	extensions map[string]Category
}

// New returns the taxonomy of a tenant with the given extensions. Each is
// checked as CheckExtension checks a new one, in any order: an extension
// may sit under another. Sensitivity is inherited and BuiltIn cleared.
func New(extensions []Category) (*Taxonomy, error) {
	sorted := slices.Clone(extensions)
	// Sorting by id puts every parent before its children, which is what
	// makes the order of extensions irrelevant.
	slices.SortFunc(sorted, func(a, b Category) int { return strings.Compare(a.ID, b.ID) })
	t := &Taxonomy{extensions: make(map[string]Category, len(sorted))}
	for _, c := range sorted {
		stored, err := t.Extension(c)
		if err != nil {
			return nil, fmt.Errorf("taxonomy: extension %q: %w", c.ID, err)
		}
		t.extensions[stored.ID] = stored
	}
	return t, nil
}

// Lookup returns the category with the given id, built in or the tenant's.
func (t *Taxonomy) Lookup(id string) (Category, bool) {
	if c, ok := builtinByID[id]; ok {
		return c, true
	}
	c, ok := t.extensions[id]
	return c, ok
}

// Known reports whether the category exists, built in or the tenant's.
func (t *Taxonomy) Known(id string) bool {
	_, ok := t.Lookup(id)
	return ok
}

// All returns every category the tenant sees, sorted by id.
func (t *Taxonomy) All() []Category {
	all := make([]Category, 0, len(builtin)+len(t.extensions))
	all = append(all, builtin...)
	for _, c := range t.extensions {
		all = append(all, c)
	}
	slices.SortFunc(all, func(a, b Category) int { return strings.Compare(a.ID, b.ID) })
	return all
}

// CheckExtension reports whether c may be added to the tenant's taxonomy.
// The error, if any, is a *FieldError; one for a taken id also wraps
// ErrAlreadyDefined.
func (t *Taxonomy) CheckExtension(c Category) error {
	_, err := t.Extension(c)
	return err
}

// Extension checks c as CheckExtension does and returns it as the taxonomy
// would hold it: sensitive when its parent is, and not built in. It is how
// a caller learns what to store and answer without rebuilding the
// taxonomy; t itself does not change.
func (t *Taxonomy) Extension(c Category) (Category, error) {
	switch {
	case c.ID == "":
		return Category{}, &FieldError{Field: "category.id", Description: "is required"}
	case !ValidID(c.ID):
		return Category{}, &FieldError{Field: "category.id", Description: fmt.Sprintf(
			"must be segments of lower-case letters, digits and underscores joined by dots, at most %d bytes", MaxIDLen)}
	}
	parentID := Parent(c.ID)
	if parentID == "" {
		// Tenants specialise Lethe's categories; a root of their own would
		// sit outside every hierarchical match the other services rely on.
		return Category{}, &FieldError{Field: "category.id", Description: "must be under an existing category; tenants cannot add top-level categories"}
	}
	if existing, ok := t.Lookup(c.ID); ok {
		whose := "by the tenant"
		if existing.BuiltIn {
			whose = "built in"
		}
		return Category{}, &FieldError{Field: "category.id", Description: fmt.Sprintf("category %q is already defined (%s)", c.ID, whose), err: ErrAlreadyDefined}
	}
	parent, ok := t.Lookup(parentID)
	if !ok {
		return Category{}, &FieldError{Field: "category.id", Description: fmt.Sprintf("parent category %q does not exist", parentID)}
	}
	switch n := utf8.RuneCountInString(c.Name); {
	case n == 0:
		return Category{}, &FieldError{Field: "category.name", Description: "is required"}
	case n > maxNameLen:
		return Category{}, &FieldError{Field: "category.name", Description: fmt.Sprintf("must be at most %d characters", maxNameLen)}
	}
	if utf8.RuneCountInString(c.Description) > maxDescriptionLen {
		return Category{}, &FieldError{Field: "category.description", Description: fmt.Sprintf("must be at most %d characters", maxDescriptionLen)}
	}
	if c.Provenance.Descriptor().Values().ByNumber(c.Provenance.Number()) == nil {
		return Category{}, &FieldError{Field: "category.provenance", Description: fmt.Sprintf("%d is not a provenance", c.Provenance)}
	}
	c.Sensitive = c.Sensitive || parent.Sensitive
	c.Provenance = inherit(c.Provenance, parent.Provenance)
	c.BuiltIn = false
	return c, nil
}
