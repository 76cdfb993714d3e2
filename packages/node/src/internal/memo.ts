/**
 * A layer that is built once per build, as layers were memoized before memo maps were shared: a provide (or
 * `Layer.build`) gets its own instance even inside a program that already provides the same layer, while the
 * layers of one composition still share one instance.
 */
import * as Layer from "effect/Layer"

/**
 * The layer `make` gives, one instance per memo map. A provide builds with a memo map of its own (a fork of
 * the enclosing one, which would otherwise hand back the enclosing provide's instance), and one composition
 * builds with one memo map throughout.
 */
export const perBuild = <A, E, R>(make: () => Layer.Layer<A, E, R>): Layer.Layer<A, E, R> => {
  const instances = new WeakMap<Layer.MemoMap, Layer.Layer<A, E, R>>()
  return Layer.fromBuild((memoMap, scope) => {
    let instance = instances.get(memoMap)
    if (instance === undefined) {
      instance = make()
      instances.set(memoMap, instance)
    }
    return Layer.buildWithMemoMap(instance, memoMap, scope)
  })
}
