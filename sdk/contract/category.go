package contract

import (
	"slices"
	"strings"
)

// MaxCategoryLen is the longest data-category id, in bytes, as
// lethe.common.v1.DataCategory allows.
const MaxCategoryLen = 200

// ValidCategory reports whether id has the syntax of a data-category id:
// one or more segments of lower-case letters, digits and underscores
// joined by single dots ("user.contact.email"), at most MaxCategoryLen
// bytes. It says nothing about whether the category exists.
func ValidCategory(id string) bool { return ValidDotted(id, MaxCategoryLen) }

// ValidDotted reports whether s is one or more segments of lower-case
// letters, digits and underscores joined by single dots, at most max
// bytes: the category syntax, which names of purposes and events follow
// too.
func ValidDotted(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	segmentStart := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if segmentStart {
				return false // a leading dot or an empty segment
			}
			segmentStart = true
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_':
			segmentStart = false
		default:
			return false
		}
	}
	return !segmentStart // no trailing dot
}

// CategoryParent returns the category above id ("user.contact" for
// "user.contact.email"), or "" for a top-level category.
func CategoryParent(id string) string {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return ""
	}
	return id[:i]
}

// CategoryCovers reports whether the category scope equals category or is
// above it by whole segments: data of category is data of scope, so an
// erasure of scope reaches it. "user.contact" covers "user.contact.email"
// but not "user.contacts".
func CategoryCovers(scope, category string) bool {
	if len(category) == len(scope) {
		return scope == category
	}
	// The byte after the prefix must be a dot, or "user.contact" would
	// cover "user.contacts".
	return len(category) > len(scope) && category[len(scope)] == '.' && strings.HasPrefix(category, scope)
}

// CategoriesInScope returns where categories meet scope, sorted and
// without repeats: a category itself when a scope category covers it, the
// narrower scope category when the category covers that; all of
// categories when scope is empty (everything). An erasure of scope reaches
// exactly these.
func CategoriesInScope(categories, scope []string) []string {
	if len(scope) == 0 {
		return categories
	}
	var out []string
	for _, c := range categories {
		for _, sc := range scope {
			switch {
			case CategoryCovers(sc, c):
				out = append(out, c)
			case CategoryCovers(c, sc):
				out = append(out, sc)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
