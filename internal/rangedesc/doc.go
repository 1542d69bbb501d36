// Package rangedesc describes the data ranges of the keyspace: each range's
// ID, its span of user keys [Start, End) and its generation, as the system
// range stores them (the design's meta range, keys.RangeDescKey), and Set,
// an immutable set of descriptors that covers the keyspace and routes a key,
// or a span of keys, to the ranges that hold it.
//
// A new cluster bootstraps one data range over the whole keyspace (Initial);
// data dirs written before descriptors existed hold none and mean the same.
// Splits and merges (issue 15, step 4) will change descriptors through the
// system range, each change raising the range's generation: a request routed
// with an older generation is retried with the new descriptor.
package rangedesc
