package main

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration is built as a settings tree (YAML's shape: mappings
// with lower-case keys, lists, scalars) in three layers, then decoded into
// Config once:
//
//  1. the embedded defaults (configs/ferry.yaml);
//  2. the user's file, merged into them: mappings merge key by key, lists
//     and scalars replace, and the maps in replacedMaps are replaced whole;
//  3. FERRY_<KEY> environment variables, each resolved against Config's
//     fields (resolveEnv) and merged the same way.
//
// Merging by hand rather than with viper's layers keeps the replace rule
// and the environment's list and map values under our control (viper
// deep-merges every map and knows no key absent from its layers).

// replacedMaps are the map-valued keys whose value from the user (file or
// environment) replaces the default one instead of merging into it: the
// defaults' bridge mapping must not survive a user's narrower one. Other
// maps merge: log.topics per topic name (telemetry and attributes are
// required and a file tunes a field or two of them). Lists always replace.
var replacedMaps = map[string]bool{"bridges.kafka.topics": true}

var (
	durationType        = reflect.TypeOf(time.Duration(0))
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// settingField is one setting of a struct: its key and type.
type settingField struct {
	name string
	typ  reflect.Type
}

// settingFields lists the settings of struct type t by their mapstructure
// keys: fields tagged ",squash" contribute theirs, fields tagged "-" or
// untagged (what the daemon wires itself) none.
func settingFields(t reflect.Type) []settingField {
	var out []settingField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case opts == "squash" && f.Type.Kind() == reflect.Struct:
			out = append(out, settingFields(f.Type)...)
		case name == "" || name == "-":
		default:
			out = append(out, settingField{name, f.Type})
		}
	}
	return out
}

// isSection reports whether t is a struct of settings (not a scalar that
// happens to be a struct, like a duration).
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != durationType && !reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// parseTree decodes a YAML document into a settings tree.
func parseTree(raw []byte) (map[string]any, error) {
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if doc == nil {
		return map[string]any{}, nil
	}
	m, ok := normalizeTree(doc).(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the document is not a mapping")
	}
	return m, nil
}

// normalizeTree lower-cases every mapping key (keys are case-insensitive,
// topic names included) and turns YAML's non-string keys into strings.
func normalizeTree(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			out[strings.ToLower(k)] = normalizeTree(c)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			out[strings.ToLower(fmt.Sprint(k))] = normalizeTree(c)
		}
		return out
	case []any:
		for i := range x {
			x[i] = normalizeTree(x[i])
		}
		return x
	}
	return v
}

func joinKey(path, k string) string {
	switch {
	case path == "":
		return k
	case strings.HasPrefix(k, "["):
		return path + k
	}
	return path + "." + k
}

// mergeTree merges src into dst (both at key path). An empty value (YAML
// null) for a section leaves it alone; for a replaced map it is the empty
// mapping; for a single setting it is that setting's zero value.
func mergeTree(dst, src map[string]any, path string) {
	for k, sv := range src {
		key := joinKey(path, k)
		dm, dIsMap := dst[k].(map[string]any)
		if replacedMaps[key] {
			if sv == nil {
				sv = map[string]any{}
			}
			dst[k] = sv
			continue
		}
		if sv == nil && dIsMap {
			continue
		}
		if sm, ok := sv.(map[string]any); ok && dIsMap {
			mergeTree(dm, sm, key)
			continue
		}
		dst[k] = sv
	}
}

// subTree returns the mapping at path, or nil.
func subTree(tree map[string]any, path []string) map[string]any {
	m := tree
	for _, k := range path {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

// setTree sets path to v, creating the mappings on the way.
func setTree(tree map[string]any, path []string, v any) {
	m := tree
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// envSetting is where one FERRY_ variable lands.
type envSetting struct {
	name string       // the variable: FERRY_LOG_TOPICS_ALARMS_PARTITIONS
	val  string       // its value
	path []string     // key path: log, topics, alarms, partitions
	typ  reflect.Type // the Config field's type
}

func (s envSetting) key() string { return strings.Join(s.path, ".") }

// envName is how a key or a map entry's name is spelled in a variable
// name: lower case, with '.' and '-' as '_'.
func envName(k string) string {
	return strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToLower(k))
}

// resolveEnv finds the settings of struct type t (at path, whose subtree
// is tree, possibly nil) that the variable suffix s (lower case, after
// FERRY_) names. Keys contain underscores themselves, so this compares
// against Config's field names rather than replacing characters: a field
// name is matched whole, then its subkeys. More than one result is an
// ambiguous name.
func resolveEnv(t reflect.Type, tree map[string]any, path []string, s string) [][]string {
	var out [][]string
	for _, f := range settingFields(t) {
		n := f.name
		p := append(append([]string(nil), path...), n)
		if s == n {
			out = append(out, p)
			continue
		}
		rest, ok := strings.CutPrefix(s, n+"_")
		if !ok || rest == "" {
			continue
		}
		sub, _ := tree[n].(map[string]any)
		switch {
		case isSection(f.typ):
			out = append(out, resolveEnv(f.typ, sub, p, rest)...)
		case f.typ.Kind() == reflect.Map:
			if e := resolveMapEntry(f.typ.Elem(), sub, p, rest); e != nil {
				out = append(out, e)
			}
		}
	}
	return out
}

// resolveMapEntry resolves the part of a variable after a map's key. The
// entry's name is user-chosen and may contain underscores; for a map of
// settings (log.topics.<name>.<field>) the name is what precedes the
// longest field name the variable ends with (..._FLUSH_INTERVAL is the
// field flush_interval, not a topic named ..._flush). A name that matches
// an entry already in the tree when spelled as a variable (site-1 as
// site_1) is that entry; otherwise the name is taken as written.
func resolveMapEntry(elem reflect.Type, tree map[string]any, path []string, rest string) []string {
	name, field := rest, ""
	if isSection(elem) {
		for _, sf := range settingFields(elem) {
			fn := sf.name
			if len(fn) > len(field) && len(rest) > len(fn)+1 && strings.HasSuffix(rest, "_"+fn) {
				name, field = rest[:len(rest)-len(fn)-1], fn
			}
		}
		if field == "" {
			return nil
		}
	}
	if strings.Contains(name, ".") {
		return nil // the key separator: not a name a variable can hold
	}
	if _, exact := tree[name]; !exact {
		known := make([]string, 0, len(tree))
		for k := range tree {
			known = append(known, k)
		}
		sort.Strings(known)
		for _, k := range known {
			if envName(k) == name {
				name = k
				break
			}
		}
	}
	p := append(append([]string(nil), path...), name)
	if field != "" {
		p = append(p, field)
	}
	return p
}

// fieldType returns the Config type at path (map entry names included).
func fieldType(t reflect.Type, path []string) reflect.Type {
	for _, k := range path {
		switch {
		case t.Kind() == reflect.Map:
			t = t.Elem()
		case t.Kind() == reflect.Struct:
			found := false
			for _, f := range settingFields(t) {
				if f.name == k {
					t, found = f.typ, true
					break
				}
			}
			if !found {
				return nil
			}
		default:
			return nil
		}
	}
	return t
}

// envSettings resolves every FERRY_ variable of environ against tree (the
// defaults and the file). Unresolvable, ambiguous and malformed ones are
// problems; the others come back ordered for applying: shorter keys first
// (FERRY_LOG_TOPICS before FERRY_LOG_TOPICS_ALARMS_FLUSH), then by name.
func envSettings(environ []string, tree map[string]any) ([]envSetting, []string) {
	var out []envSetting
	var problems []string
	for _, kv := range environ {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "FERRY_") {
			continue
		}
		paths := resolveEnv(reflect.TypeOf(Config{}), tree, nil, strings.ToLower(strings.TrimPrefix(k, "FERRY_")))
		switch len(paths) {
		case 0:
			problems = append(problems, fmt.Sprintf("%s: no such setting", k))
		case 1:
			out = append(out, envSetting{name: k, val: val, path: paths[0], typ: fieldType(reflect.TypeOf(Config{}), paths[0])})
		default:
			keys := make([]string, len(paths))
			for i, p := range paths {
				keys[i] = strings.Join(p, ".")
			}
			sort.Strings(keys)
			problems = append(problems, fmt.Sprintf("%s: ambiguous, names %s", k, strings.Join(keys, " and ")))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i].path) != len(out[j].path) {
			return len(out[i].path) < len(out[j].path)
		}
		return out[i].name < out[j].name
	})
	return out, problems
}

// applyEnv merges the variables into tree. userMaps says which replaced
// maps the file set; a variable naming one entry of a replaced map the user
// has not set starts that map afresh (the defaults' entries do not stay).
func applyEnv(tree map[string]any, settings []envSetting, userMaps map[string]bool) []string {
	var problems []string
	for _, s := range settings {
		v, err := parseEnvValue(s.val, s.typ)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s (%s): %v", s.name, s.key(), err))
			continue
		}
		switch v.(type) {
		case map[string]any, []any:
			for _, p := range unknownKeysIn(v, s.typ, s.key()) {
				problems = append(problems, fmt.Sprintf("%s: %s", s.name, p))
			}
		}
		parent := s.path[:len(s.path)-1]
		if mapKey := strings.Join(parent, "."); replacedMaps[mapKey] && !userMaps[mapKey] {
			setTree(tree, parent, map[string]any{})
			userMaps[mapKey] = true
		}
		if replacedMaps[s.key()] {
			userMaps[s.key()] = true
		}
		// A mapping merges into the section or map it names, as a file's
		// would; anything else (and a replaced map) is set.
		if m, ok := v.(map[string]any); ok && !replacedMaps[s.key()] {
			if dst := subTree(tree, s.path); dst != nil {
				mergeTree(dst, m, s.key())
				continue
			}
		}
		setTree(tree, s.path, v)
	}
	return problems
}

// parseEnvValue reads a variable's value as the type of its setting:
// scalars as text; a list of strings comma-separated (a,b) or in YAML/JSON
// flow form ([a, b]); lists of settings, maps and sections in YAML/JSON
// flow form ([{name: a, token: t}], {telemetry: site1.telemetry}).
func parseEnvValue(val string, t reflect.Type) (any, error) {
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshalerType): // sizes, codecs
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(val)); err != nil {
			return nil, err
		}
		return val, nil
	case t == durationType:
		if _, err := time.ParseDuration(val); err != nil {
			return nil, fmt.Errorf("%q is not a duration (1h30m, 500ms)", val)
		}
		return val, nil
	case t.Kind() == reflect.String:
		return val, nil
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", val)
		}
		return b, nil
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", val)
		}
		return n, nil
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", val)
		}
		return f, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String && !strings.HasPrefix(strings.TrimSpace(val), "["):
		out := []any{}
		for _, item := range splitList(val) {
			out = append(out, item)
		}
		return out, nil
	case t.Kind() == reflect.Slice:
		v, err := parseFlow(val)
		if err != nil {
			return nil, fmt.Errorf("not a YAML or JSON list: %v", err)
		}
		if v == nil {
			return []any{}, nil
		}
		l, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("not a YAML or JSON list (%s)", describe(v))
		}
		if t.Elem().Kind() == reflect.String {
			for i, item := range l {
				if _, ok := item.(map[string]any); ok {
					return nil, fmt.Errorf("item %d is a mapping, not a string", i)
				}
				if _, ok := item.([]any); ok {
					return nil, fmt.Errorf("item %d is a list, not a string", i)
				}
			}
		}
		return l, nil
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		v, err := parseFlow(val)
		if err != nil {
			return nil, fmt.Errorf("not a YAML or JSON mapping: %v", err)
		}
		if v == nil {
			return map[string]any{}, nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("not a YAML or JSON mapping (%s)", describe(v))
		}
		return m, nil
	}
	return nil, fmt.Errorf("cannot be set from the environment")
}

func parseFlow(val string) (any, error) {
	var v any
	if err := yaml.Unmarshal([]byte(val), &v); err != nil {
		return nil, err
	}
	return normalizeTree(v), nil
}

func describe(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("the value %v", v)
}

// splitList is how a string becomes a list of strings, in a file
// (`brokers: "a:9092, b:9092"`) as in the environment: split at commas,
// items trimmed, empty ones dropped.
func splitList(val string) []string {
	var out []string
	for _, item := range strings.Split(val, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// stringToListHook decodes a string into a list of strings with splitList
// (viper's default hook splits without trimming).
func stringToListHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice || to.Elem().Kind() != reflect.String {
		return data, nil
	}
	return splitList(data.(string)), nil
}
