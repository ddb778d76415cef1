//! Host bindings generated from `plugin-api/wit` (the `full-plugin` world: every host import
//! and every role's exports). A component need not export every role: roles are bound one
//! interface at a time through the generated `GuestIndices`.

wasmtime::component::bindgen!({
    path: "../plugin-api/wit",
    world: "full-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});
