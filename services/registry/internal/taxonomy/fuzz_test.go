package taxonomy

import "testing"

// FuzzValidID checks that ValidID, Parent and Covers never panic, and that
// a valid id has a valid ancestor chain that covers it, so that anything
// accepted as a category id can be matched hierarchically.
func FuzzValidID(f *testing.F) {
	for _, id := range []string{"user", "user.contact.email", "user..email", ".", "user.", "User", "usér"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		valid := ValidID(id)
		for p := Parent(id); p != ""; p = Parent(p) {
			if !Covers(p, id) || Covers(id, p) {
				t.Fatalf("ancestor %q of %q: Covers disagrees", p, id)
			}
			if valid && !ValidID(p) {
				t.Fatalf("ValidID(%q) but not its ancestor %q", id, p)
			}
		}
		if !Covers(id, id) || !Related(id, id) {
			t.Fatalf("%q does not cover itself", id)
		}
	})
}
