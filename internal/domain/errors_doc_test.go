package domain

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// docs/transactions.md shows the table of kinds; it must say what the code does.
func TestTheDocsShowTheKindTable(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/transactions.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (\\d{3}) \\| (yes|no) \\| *(\\d*) *\\|").FindAllSubmatch(doc, -1)
	documented := map[string]bool{}
	for _, r := range rows {
		name, status, stored, retryAfter := string(r[1]), string(r[2]), string(r[3]) == "yes", string(r[4])
		documented[name] = true
		k := kindNamed(name)
		if k < 0 {
			t.Errorf("docs/transactions.md lists kind %s, which the code does not have", name)
			continue
		}
		if status != strconv.Itoa(k.Status()) || stored != k.Stored() || retryAfter != map[bool]string{true: strconv.Itoa(k.RetryAfter())}[k.RetryAfter() > 0] {
			t.Errorf("docs/transactions.md: %s | %s | %v | %s; the code: %d | %v | %d", name, status, stored, retryAfter, k.Status(), k.Stored(), k.RetryAfter())
		}
	}
	for k := KindInternal; k < numKinds; k++ {
		if !documented[k.String()] {
			t.Errorf("docs/transactions.md does not list kind %s", k)
		}
	}
}

func kindNamed(name string) Kind {
	for k := KindInternal; k < numKinds; k++ {
		if k.String() == name {
			return k
		}
	}
	return -1
}
