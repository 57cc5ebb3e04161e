package domain

// Page asks for at most Limit items after the item with id After (exclusive);
// lists are ordered by id, newest first.
type Page struct {
	After string
	Limit int
}

// Paginate trims items fetched with Limit+1 to Limit and returns the id to
// continue after, or "" when there is nothing more.
func Paginate[T any](items []T, limit int, id func(T) string) ([]T, string) {
	if len(items) <= limit {
		return items, ""
	}
	items = items[:limit]
	return items, id(items[len(items)-1])
}
