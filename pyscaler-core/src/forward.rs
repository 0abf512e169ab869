//! The `Action` impls that forward to an inner action: `Box<A>`, `Arc<A>`,
//! and the parts of the engine's wrappers they do not change.
//!
//! They all come from [`forward_action!`], which emits the impl with
//! `#[deny(clippy::missing_trait_methods)]`: a method added to [`Action`]
//! and forgotten here fails `cargo clippy` instead of silently falling back
//! to the trait's default (a `Box<dyn Action>` that never withdraws, say).

use std::sync::Arc;

use crate::Action;

/// Implements [`Action`] for `$ty` by forwarding the named methods to the
/// action `AsRef<$inner>` gives, and taking the other items as written.
///
/// ```text
/// forward_action! {
///     impl[A: Action] for Timeout<A> => A;
///     forward(name, describe, intent, nodes_to_remove, repeatable, withdraw, compensate);
///     async fn run(&self, ctx: &mut Context) -> Result<()> { .. }
/// }
/// ```
macro_rules! forward_action {
    (impl[$($g:tt)*] for $ty:ty => $inner:ty; forward($($m:ident),* $(,)?); $($own:tt)*) => {
        forward_action!(@build [$($g)*] [$ty] [$inner] [$($m)*] [$($own)*]);
    };
    (@build $g:tt $ty:tt $inner:tt [] [$($items:tt)*]) => {
        forward_action!(@emit $g $ty [$($items)*]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [name $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            fn name(&self) -> &str {
                <Self as AsRef<$inner>>::as_ref(self).name()
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [describe $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            fn describe(&self) -> $crate::Effects {
                <Self as AsRef<$inner>>::as_ref(self).describe()
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [intent $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            fn intent(&self, ctx: &$crate::Context) -> Vec<String> {
                <Self as AsRef<$inner>>::as_ref(self).intent(ctx)
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [nodes_to_remove $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            fn nodes_to_remove(&self, ctx: &$crate::Context) -> Vec<$crate::Node> {
                <Self as AsRef<$inner>>::as_ref(self).nodes_to_remove(ctx)
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [repeatable $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            fn repeatable(&self) -> bool {
                <Self as AsRef<$inner>>::as_ref(self).repeatable()
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [run $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            async fn run(&self, ctx: &mut $crate::Context) -> $crate::Result<()> {
                <Self as AsRef<$inner>>::as_ref(self).run(ctx).await
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [compensate $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            async fn compensate(&self, ctx: &mut $crate::Context) -> $crate::Result<()> {
                <Self as AsRef<$inner>>::as_ref(self).compensate(ctx).await
            }
        ]);
    };
    (@build $g:tt $ty:tt [$inner:ty] [withdraw $($rest:ident)*] [$($items:tt)*]) => {
        forward_action!(@build $g $ty [$inner] [$($rest)*] [$($items)*
            async fn withdraw(&self, ctx: &mut $crate::Context) -> $crate::Result<()> {
                <Self as AsRef<$inner>>::as_ref(self).withdraw(ctx).await
            }
        ]);
    };
    (@emit [$($g:tt)*] [$ty:ty] [$($items:tt)*]) => {
        #[deny(clippy::missing_trait_methods)]
        #[async_trait::async_trait]
        impl<$($g)*> $crate::Action for $ty {
            $($items)*
        }
    };
}

pub(crate) use forward_action;

forward_action! {
    impl[A: Action + ?Sized] for Box<A> => A;
    forward(name, describe, intent, nodes_to_remove, repeatable, run, compensate, withdraw);
}

forward_action! {
    impl[A: Action + ?Sized] for Arc<A> => A;
    forward(name, describe, intent, nodes_to_remove, repeatable, run, compensate, withdraw);
}
